//! The host's quoting, checked against the real HAProxy: `.notice` prints its argument as
//! HAProxy read it, so every string must come back exactly.

mod common;

use wasmconfd::assemble::directive_line;
use wasmconfd::bindings::Directive;

#[test]
fn haproxy_reads_back_exactly_what_the_guest_meant() {
    let strings = [
        "plain",
        "two words",
        "it's",
        "''",
        "\"double\"",
        "#not-a-comment",
        "${HOME} and $HOME",
        r"back\slash \n",
        "bücher ☃",
        "%[req.hdr(host),lower]",
        "{ }",
        "",
    ];
    let dir = tempfile::tempdir().unwrap();
    for s in strings {
        let config = dir.path().join("notice.cfg");
        let line = directive_line(&Directive::new(".notice", [s])).unwrap();
        std::fs::write(
            &config,
            format!("global\n    {line}\nfrontend f\n    bind 127.0.0.1:65000\n"),
        )
        .unwrap();
        let (valid, output) = common::haproxy_check(&config);
        assert!(valid, "{s:?} as {line}: {output}");
        let expected = format!("notice.cfg:2]: '{s}'.");
        assert!(
            output.contains(&expected),
            "{s:?} written as {line} came back as:\n{output}"
        );
    }
}
