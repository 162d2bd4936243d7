//! Which meta server to ask: the one that answered last; after a "not leader" answer, the leader
//! it names (when it is one of the known servers), else the next one; after a transport failure,
//! the next one. The client library and the simulated clients and servers follow this one rule.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRoute {
    count: usize,
    current: usize,
}

impl MetaRoute {
    pub fn new(count: usize) -> MetaRoute {
        assert!(count > 0, "at least one meta server");
        MetaRoute { count, current: 0 }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// The current server does not lead; `hint` is the one it named, if any.
    pub fn not_leader(&mut self, hint: Option<usize>) {
        self.current = match hint {
            Some(h) if h < self.count && h != self.current => h,
            _ => (self.current + 1) % self.count,
        };
    }

    /// The current server did not answer.
    pub fn unreachable(&mut self) {
        self.current = (self.current + 1) % self.count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_hints_and_moves_on_otherwise() {
        let mut r = MetaRoute::new(3);
        r.not_leader(Some(2));
        assert_eq!(r.current(), 2);
        r.not_leader(Some(2));
        assert_eq!(r.current(), 0, "a server naming itself is not believed");
        r.not_leader(None);
        assert_eq!(r.current(), 1);
        r.unreachable();
        r.unreachable();
        assert_eq!(r.current(), 0);
        r.not_leader(Some(9));
        assert_eq!(r.current(), 1, "an unknown leader: the next one");
    }
}
