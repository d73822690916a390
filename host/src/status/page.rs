//! The status page: `GET /`, one self-contained HTML page (no script, no stylesheet or font
//! from elsewhere), and `GET /status`, the same as JSON. What runs, what was left out and why,
//! what was applied, and whether wasmconfd is in step with the cluster and HAProxy.

use super::{ApplyReport, GuestReport, Skipped, Status};
use serde::Serialize;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub struct View {
    pub version: String,
    /// `None` when ready; otherwise why not, as `/readyz` says it.
    pub not_ready: Option<String>,
    pub synced: bool,
    pub api_reachable: bool,
    pub installed: bool,
    pub reload_pending: bool,
    pub host_problem: Option<String>,
    /// Why the current render is held back.
    pub held: Option<String>,
    pub draining_servers: u64,
    /// RFC 3339; `None` before the first apply.
    pub last_applied: Option<String>,
    pub guests: Vec<GuestReport>,
    pub skipped: Vec<Skipped>,
    pub quarantined: Vec<Quarantined>,
    pub applies: Vec<ApplyReport>,
    pub certificates: Vec<CertificateReport>,
}

#[derive(Debug, Serialize)]
pub struct Quarantined {
    pub guest: String,
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct CertificateReport {
    pub namespace: String,
    pub secret: String,
    /// RFC 3339.
    pub expires: String,
}

impl View {
    pub fn of(status: &Status) -> View {
        let report = status.report.lock().unwrap().clone();
        let last_applied = status.last_applied.load(Ordering::Relaxed);
        let time = |seconds: u64| {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
            humantime::format_rfc3339_seconds(at).to_string()
        };
        View {
            version: format!(
                "{} ({})",
                env!("CARGO_PKG_VERSION"),
                env!("WASMCONFD_COMMIT")
            ),
            not_ready: status.not_ready(),
            synced: status.synced.load(Ordering::Relaxed),
            api_reachable: !status.api_failing.load(Ordering::Relaxed),
            installed: status.installed.load(Ordering::Relaxed),
            reload_pending: status.reload_pending.load(Ordering::Relaxed),
            host_problem: status.host_problem.lock().unwrap().clone(),
            held: status.held.lock().unwrap().clone(),
            draining_servers: status.draining_servers.load(Ordering::Relaxed),
            last_applied: (last_applied > 0).then(|| time(last_applied)),
            guests: report.guests,
            skipped: report.skipped,
            quarantined: status
                .quarantined
                .lock()
                .unwrap()
                .iter()
                .map(|(guest, object, reason)| Quarantined {
                    guest: guest.clone(),
                    object: object.clone(),
                    reason: reason.clone(),
                })
                .collect(),
            applies: report.applies.into_iter().collect(),
            certificates: status
                .certificates
                .lock()
                .unwrap()
                .iter()
                .map(|((namespace, secret), expiry)| CertificateReport {
                    namespace: namespace.clone(),
                    secret: secret.clone(),
                    expires: time((*expiry).max(0) as u64),
                })
                .collect(),
        }
    }

    /// The page, as HTML.
    pub fn html(&self) -> String {
        let mut page = String::from(HEAD);
        let state = match &self.not_ready {
            None => "<p class=ok id=state>Ready: in step with the cluster, HAProxy runs the \
                     configuration.</p>"
                .to_string(),
            Some(why) => format!("<p class=bad id=state>Not ready: {}</p>", escape(why)),
        };
        let _ = write!(
            page,
            "<h1>wasmconfd</h1><p class=small>version {}</p>{state}",
            escape(&self.version)
        );
        let yes_no = |flag: bool| if flag { "yes" } else { "no" };
        table(
            &mut page,
            "state",
            "State",
            &["", ""],
            [
                ["Synced with the API", yes_no(self.synced)],
                ["API reachable", yes_no(self.api_reachable)],
                ["Configuration installed", yes_no(self.installed)],
                ["Reload pending", yes_no(self.reload_pending)],
                [
                    "Last applied",
                    self.last_applied.as_deref().unwrap_or("never"),
                ],
                [
                    "Problem on this host",
                    self.host_problem.as_deref().unwrap_or("none"),
                ],
                ["Render held back", self.held.as_deref().unwrap_or("no")],
                ["Draining servers", &self.draining_servers.to_string()],
            ]
            .iter()
            .map(|row| row.map(str::to_string)),
        );
        table(
            &mut page,
            "guests",
            "Guests",
            &[
                "Slot",
                "Source",
                "Digest",
                "Signature",
                "World",
                "Code",
                "Trust",
                "Services",
                "Last run",
                "Took",
                "Result",
            ],
            self.guests.iter().map(|g| {
                let run = g.last_run.as_ref();
                [
                    g.slot.clone(),
                    g.source.clone(),
                    g.digest.clone(),
                    g.signature.clone(),
                    g.world.clone(),
                    g.compiled.clone(),
                    g.trust.clone(),
                    g.services.to_string(),
                    run.map_or("not yet".into(), |r| r.at.clone()),
                    run.map_or(String::new(), |r| format!("{:.1} ms", r.seconds * 1000.0)),
                    run.map_or(String::new(), |r| r.result.clone()),
                ]
            }),
        );
        table(
            &mut page,
            "skipped",
            "Objects left out of the model",
            &["Object", "Reason", "Left out"],
            self.skipped.iter().map(|s| {
                let what = if s.whole { "whole" } else { "in part" };
                [s.object.clone(), s.reason.clone(), what.into()]
            }),
        );
        table(
            &mut page,
            "quarantined",
            "Services quarantined (a guest fails on them)",
            &["Guest", "Service", "Reason"],
            self.quarantined
                .iter()
                .map(|q| [q.guest.clone(), q.object.clone(), q.reason.clone()]),
        );
        table(
            &mut page,
            "applies",
            "Last applies",
            &["At", "How", "Changes or reasons"],
            self.applies
                .iter()
                .map(|a| [a.at.clone(), a.class.clone(), a.details.join("; ")]),
        );
        table(
            &mut page,
            "certificates",
            "Certificates",
            &["Namespace", "Secret", "Expires"],
            self.certificates
                .iter()
                .map(|c| [c.namespace.clone(), c.secret.clone(), c.expires.clone()]),
        );
        page.push_str(
            "<p class=small>The same as JSON: <a href=\"/status\">/status</a>. Also \
             <a href=\"/metrics\">/metrics</a>, <a href=\"/readyz\">/readyz</a>, \
             <a href=\"/quarantined\">/quarantined</a>.</p></body></html>\n",
        );
        page
    }
}

const HEAD: &str = "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content=\"width=device-width\"><title>wasmconfd</title><style>\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.4em 0 .4em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;\
vertical-align:top}th{background:#f3f3f3}td{max-width:36em;overflow-wrap:break-word}\
.ok{color:#176117}.bad{color:#a11}.small{color:#666;font-size:.9em}.none{color:#666}\
</style></head><body>";

/// An `<h2>` and a table with `id`, or a line saying there is nothing.
fn table<const N: usize>(
    page: &mut String,
    id: &str,
    title: &str,
    headers: &[&str; N],
    rows: impl Iterator<Item = [String; N]>,
) {
    let _ = write!(page, "<h2>{title}</h2>");
    let mut body = String::new();
    for row in rows {
        body.push_str("<tr>");
        for cell in row {
            let _ = write!(body, "<td>{}</td>", escape(&cell));
        }
        body.push_str("</tr>");
    }
    if body.is_empty() {
        let _ = write!(page, "<p class=none id={id}>None.</p>");
        return;
    }
    let _ = write!(page, "<table id={id}>");
    if headers.iter().any(|h| !h.is_empty()) {
        page.push_str("<tr>");
        for header in headers {
            let _ = write!(page, "<th>{header}</th>");
        }
        page.push_str("</tr>");
    }
    page.push_str(&body);
    page.push_str("</table>");
}

/// `text` safe inside HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_the_cluster_are_escaped() {
        let status = Status::default();
        status.report.lock().unwrap().skipped.push(Skipped {
            object: "Service a/<script>".into(),
            reason: "bad \"quote\" & <b>".into(),
            whole: true,
        });
        let html = View::of(&status).html();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("Service a/&lt;script&gt;"), "{html}");
        assert!(
            html.contains("bad &quot;quote&quot; &amp; &lt;b&gt;"),
            "{html}"
        );
        assert!(html.contains("<p class=bad id=state>Not ready: waiting for the first"));
    }
}
