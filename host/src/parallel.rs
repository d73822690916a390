//! Large pieces of work spread over the cores: reading a snapshot, converting a first render's
//! objects, asking a guest for the servers of thousands of services.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    if items.len() < many {
        return vec![work(items)];
    }
    in_parts(items, items.len().div_ceil(threads()), work)
}

/// `work` on `items` in parts of at most `most` items, taken in turn by one thread per core,
/// and the results in order, one per part. For work whose memory grows with its part: a guest
/// asked for the servers of 1,000 services at a time needs a fifth of the memory it needs for
/// 5,000.
pub fn in_parts<T: Sync, R: Send>(
    items: &[T],
    most: usize,
    work: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let parts: Vec<&[T]> = items.chunks(most.max(1)).collect();
    let threads = threads().min(parts.len());
    if threads <= 1 {
        return parts.into_iter().map(work).collect();
    }
    let next = AtomicUsize::new(0);
    let take_parts = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(part) = parts.get(i) else {
                return done;
            };
            done.push((i, work(part)));
        }
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads).map(|_| scope.spawn(take_parts)).collect();
        (running.into_iter())
            .flat_map(|thread| {
                (thread.join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_in_order_and_whole() {
        let items: Vec<usize> = (0..10_007).collect();
        let parts = in_parts(&items, 1000, |part| {
            // Uneven work, so that the threads finish their parts out of order.
            if part[0] % 3000 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            part.to_vec()
        });
        assert_eq!(parts.len(), 11);
        assert!(parts.iter().all(|part| part.len() <= 1000));
        assert_eq!(parts.concat(), items);
        assert_eq!(in_parts(&items[..3], 1000, |part| part.len()), vec![3]);
        assert!(in_parts(&items[..0], 1000, |part| part.len()).is_empty());
    }
}
