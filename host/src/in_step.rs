//! What one pass over a list made of each item, kept for the next pass and taken back in step.

/// The results of the last pass, by the key of the item each came from, in the order the items
/// came. The items mostly come again in the same order (the model's services, sorted; the
/// sections of an assembly), so each is looked for where the last one taken was followed, and
/// only one that is not there is looked up by key.
pub struct InStep<T> {
    kept: Vec<(usize, Option<T>)>,
    /// Where the next item is expected.
    next: usize,
    /// Positions by key, made when an item is first not where expected.
    index: Option<foldhash::HashMap<usize, usize>>,
}

impl<T> InStep<T> {
    pub fn new(kept: Vec<(usize, Option<T>)>) -> Self {
        InStep {
            kept,
            next: 0,
            index: None,
        }
    }

    /// What the last pass made of the item `key`, if it had it and it was not taken yet.
    pub fn take(&mut self, key: usize) -> Option<T> {
        let at = match self.kept.get(self.next) {
            Some((k, _)) if *k == key => self.next,
            _ => {
                let kept = &self.kept;
                let index = (self.index).get_or_insert_with(|| {
                    (kept.iter().enumerate())
                        .map(|(i, (k, _))| (*k, i))
                        .collect()
                });
                *index.get(&key)?
            }
        };
        self.next = at + 1;
        self.kept[at].1.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_found_in_step_moved_or_not_at_all() {
        let mut kept = InStep::new(vec![(1, Some("a")), (2, Some("b")), (3, Some("c"))]);
        assert_eq!(kept.take(1), Some("a"));
        assert_eq!(kept.take(3), Some("c"), "out of step: looked up");
        assert_eq!(kept.take(2), Some("b"));
        assert_eq!(kept.take(4), None, "not there");
        assert_eq!(kept.take(1), None, "taken already");
    }
}
