//! Large pieces of work spread over the cores: reading a snapshot, converting a first render's
//! objects, asking a guest for the servers of thousands of services.

/// How many threads a large piece of work is spread over: one per core, up to 4.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// `work` on `items` by chunks, one per thread, and the results in order; at once on this
/// thread when there are fewer than `many` items.
pub fn by_chunks<T: Sync, R: Send>(
    items: &[T],
    many: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let threads = if items.len() < many { 1 } else { threads() };
    if threads == 1 {
        return vec![work(items)];
    }
    let work = &work;
    std::thread::scope(|scope| {
        let running: Vec<_> = (items.chunks(items.len().div_ceil(threads)))
            .map(|chunk| scope.spawn(move || work(chunk)))
            .collect();
        (running.into_iter())
            .map(|thread| (thread.join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}
