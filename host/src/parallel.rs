//! Large pieces of work spread over the cores: reading a snapshot, converting a first render's
//! objects, asking a guest for the servers of thousands of services.

use std::sync::Mutex;
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

/// `work` on the items `find` hands to the function it is given, in parts of `most` items, each
/// taken by one of a thread per core as soon as `find` has found it: the work is done while
/// `find` goes on. What `find` returned, and the results in order, one per part.
pub fn as_found<'a, T: Send + 'a, F, R: Send>(
    most: usize,
    find: impl FnOnce(&mut dyn FnMut(T)) -> F,
    work: impl Fn(Vec<T>) -> R + Sync,
) -> (F, Vec<R>) {
    let most = most.max(1);
    let (send, parts) = std::sync::mpsc::channel::<(usize, Vec<T>)>();
    let parts = Mutex::new(parts);
    let take_parts = || {
        let mut done = Vec::new();
        loop {
            // The lock is held only to receive (a statement of its own: in a `while let`, the
            // guard would live through the work).
            let next = parts.lock().unwrap().recv();
            let Ok((i, part)) = next else {
                return done;
            };
            done.push((i, work(part)));
        }
    };
    std::thread::scope(|scope| {
        let running: Vec<_> = (0..threads()).map(|_| scope.spawn(take_parts)).collect();
        let (mut part, mut count) = (Vec::with_capacity(most), 0);
        let found = find(&mut |item| {
            part.push(item);
            if part.len() == most {
                let _ = send.send((
                    count,
                    std::mem::replace(&mut part, Vec::with_capacity(most)),
                ));
                count += 1;
            }
        });
        if !part.is_empty() {
            let _ = send.send((count, part));
        }
        // No part is left: each thread returns once the parts sent are taken.
        drop(send);
        let mut done: Vec<(usize, R)> = (running.into_iter())
            .flat_map(|thread| {
                (thread.join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect();
        done.sort_unstable_by_key(|(i, _)| *i);
        (found, done.into_iter().map(|(_, result)| result).collect())
    })
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

    #[test]
    fn parts_found_come_back_in_order_and_whole() {
        let (found, parts) = as_found(
            1000,
            |found| {
                for i in 0..10_007 {
                    found(i);
                }
                "found"
            },
            |part: Vec<usize>| {
                if part[0].is_multiple_of(3000) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                part
            },
        );
        assert_eq!(found, "found");
        assert_eq!(parts.len(), 11);
        assert_eq!(parts.concat(), (0..10_007).collect::<Vec<_>>());
        let (_, none) = as_found(1000, |_| (), |part: Vec<usize>| part);
        assert!(none.is_empty());
    }
}
