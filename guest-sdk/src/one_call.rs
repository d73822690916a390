//! An allocator for a guest that lives for one call.

use core::alloc::{GlobalAlloc, Layout};

/// An allocator for a guest that lives for one call: faster than the default for most guests.
///
/// The host runs every call into a guest (`describe`, `render`, each part of `servers`) in a
/// fresh instance, whose memory is dropped with it. A general-purpose allocator then does work
/// that is never used: it keeps free lists for memory that no later call will reuse. Every string
/// and list the host hands the guest is also allocated through it, one call at a time.
///
/// [`OneCallAllocator`] hands out memory in order from the end of what it has used, and takes
/// back only the last allocation when it is freed or resized (so a growing `String` or `Vec`
/// stays in place). It made the bundled http guest's render of 10,000 services about a fifth
/// faster (`docs/guests.md`), for a fifth more peak memory at 10,000 services and two fifths
/// more at 50,000: memory freed before the end of the call is not reused. A guest that
/// builds and drops large temporaries over and over should keep the default allocator.
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: wasmconfd_guest::OneCallAllocator = wasmconfd_guest::OneCallAllocator::new();
/// # fn main() {}
/// ```
///
/// Built for anything other than Wasm (a guest's native tests), it is the system allocator.
pub struct OneCallAllocator {
    #[cfg(target_arch = "wasm32")]
    state: core::cell::Cell<bump::State>,
}

// A guest instance has one thread.
unsafe impl Sync for OneCallAllocator {}

impl OneCallAllocator {
    #[allow(clippy::new_without_default)] // used in a `static`
    pub const fn new() -> OneCallAllocator {
        OneCallAllocator {
            #[cfg(target_arch = "wasm32")]
            state: core::cell::Cell::new(bump::State::EMPTY),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
unsafe impl GlobalAlloc for OneCallAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// The allocator's bookkeeping, apart from the memory so that it is tested natively.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod bump {
    use core::alloc::Layout;

    /// Where the free memory is: `[next, end)`, and where the last allocation starts.
    #[derive(Clone, Copy, Debug)]
    pub struct State {
        next: usize,
        end: usize,
        last: usize,
    }

    const PAGE: usize = 64 << 10;

    /// Memory is taken from the end of the linear memory this many pages at a time, at least.
    const GROW_PAGES: usize = 16;

    impl State {
        pub const EMPTY: State = State {
            next: 0,
            end: 0,
            last: usize::MAX,
        };

        /// The address of `layout` newly allocated, growing the memory by `grow(pages)` (which
        /// returns the first new page) when there is not enough left.
        pub fn alloc(
            &mut self,
            layout: Layout,
            grow: impl FnOnce(usize) -> Option<usize>,
        ) -> Option<usize> {
            let fits = |next: usize, end: usize| {
                let start = next.checked_next_multiple_of(layout.align())?;
                Some(start)
                    .filter(|start| start.checked_add(layout.size()).is_some_and(|e| e <= end))
            };
            let start = match fits(self.next, self.end) {
                Some(start) if self.end != 0 => start,
                _ => {
                    let pages = layout
                        .size()
                        .checked_add(layout.align())?
                        .div_ceil(PAGE)
                        .max(GROW_PAGES);
                    let first = grow(pages)? * PAGE;
                    // Another allocator in the guest (wasi-libc's, for its own use) may have grown
                    // the memory since, so the new pages may not follow ours.
                    if first != self.end {
                        self.next = first;
                    }
                    self.end = first + pages * PAGE;
                    fits(self.next, self.end)?
                }
            };
            self.next = start + layout.size();
            self.last = start;
            Some(start)
        }

        /// Frees `address`: only the last allocation is taken back.
        pub fn dealloc(&mut self, address: usize) {
            if address == self.last {
                self.next = address;
            }
        }

        /// Resizes the last allocation in place if it is `address` and there is room.
        pub fn resize_in_place(&mut self, address: usize, new_size: usize) -> bool {
            let fits = address == self.last && new_size <= self.end - address;
            if fits {
                self.next = address + new_size;
            }
            fits
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn layout(size: usize, align: usize) -> Layout {
            Layout::from_size_align(size, align).unwrap()
        }

        /// A linear memory of `pages` pages, and how many times it was grown.
        struct Memory {
            pages: usize,
            grown: usize,
        }

        impl Memory {
            fn grow(&mut self, pages: usize) -> Option<usize> {
                let first = self.pages;
                self.pages += pages;
                self.grown += 1;
                Some(first)
            }
        }

        #[test]
        fn allocations_follow_one_another_aligned_in_memory_grown_at_the_end() {
            let mut memory = Memory { pages: 2, grown: 0 };
            let mut state = State::EMPTY;
            let a = state.alloc(layout(3, 1), |p| memory.grow(p)).unwrap();
            let b = state.alloc(layout(8, 8), |p| memory.grow(p)).unwrap();
            assert_eq!((a, b), (2 * PAGE, 2 * PAGE + 8));
            assert_eq!(memory.pages, 2 + GROW_PAGES);
            // A large one grows the memory again, by what it needs, right after.
            let big = state
                .alloc(layout(GROW_PAGES * PAGE, 1), |p| memory.grow(p))
                .unwrap();
            assert_eq!(big, 2 * PAGE + 16);
            assert_eq!(memory.grown, 2);
            assert!(big + GROW_PAGES * PAGE <= memory.pages * PAGE);
        }

        #[test]
        fn the_last_allocation_is_taken_back_and_resized_in_place_and_no_other() {
            let mut memory = Memory { pages: 0, grown: 0 };
            let mut state = State::EMPTY;
            let a = state.alloc(layout(16, 1), |p| memory.grow(p)).unwrap();
            let b = state.alloc(layout(16, 1), |p| memory.grow(p)).unwrap();
            assert!(!state.resize_in_place(a, 32), "not the last one");
            assert!(
                state.resize_in_place(b, 1000),
                "a growing String stays where it is"
            );
            assert_eq!(
                state.alloc(layout(1, 1), |p| memory.grow(p)),
                Some(b + 1000)
            );
            let c = state.next - 1;
            state.dealloc(a);
            assert_eq!(state.alloc(layout(1, 1), |p| memory.grow(p)), Some(c + 1));
            state.dealloc(c + 1);
            assert_eq!(
                state.alloc(layout(1, 1), |p| memory.grow(p)),
                Some(c + 1),
                "reused"
            );
            assert!(!state.resize_in_place(b, 1), "no longer the last one");
            assert_eq!(memory.grown, 1);
        }

        #[test]
        fn memory_grown_by_someone_else_is_stepped_over() {
            let mut state = State::EMPTY;
            let a = state.alloc(layout(PAGE, 1), |_| Some(1)).unwrap();
            assert_eq!(a, PAGE);
            // Another allocator took pages 17 and 18: ours come after them.
            let b = state
                .alloc(layout(GROW_PAGES * PAGE, 1), |_| Some(19))
                .unwrap();
            assert_eq!(b, 19 * PAGE);
        }

        #[test]
        fn memory_that_cannot_grow_is_a_failed_allocation() {
            let mut state = State::EMPTY;
            assert_eq!(state.alloc(layout(1, 1), |_| None), None);
            assert_eq!(state.alloc(layout(8, 8), |_| Some(1)), Some(PAGE));
        }
    }
}

#[cfg(target_arch = "wasm32")]
unsafe impl GlobalAlloc for OneCallAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let mut state = self.state.get();
        let grow = |pages| {
            let first = core::arch::wasm32::memory_grow::<0>(pages);
            (first != usize::MAX).then_some(first)
        };
        let address = state.alloc(layout, grow);
        self.state.set(state);
        address.map_or(core::ptr::null_mut(), |a| a as *mut u8)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        let mut state = self.state.get();
        state.dealloc(ptr as usize);
        self.state.set(state);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mut state = self.state.get();
        let in_place = state.resize_in_place(ptr as usize, new_size);
        self.state.set(state);
        if in_place {
            return ptr;
        }
        let new =
            unsafe { self.alloc(Layout::from_size_align_unchecked(new_size, layout.align())) };
        if !new.is_null() {
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
