//! How a flush's datagrams, sorted by destination, are handed to the kernel: runs of them to
//! one destination as UDP GSO sends (a paced burst, a keyframe to a subscriber), the GSO sends
//! of one segment size together in one `sendmmsg` (the same burst to many subscribers), the
//! rest one by one in `sendmmsg` batches.
//!
//! The plan is made apart from the sending so that its one rule can be checked on its own:
//! order across destinations is free, but every destination's datagrams leave in their order
//! (a receiver takes a reordered packet for a lost one, and SCTP may deliver a later message
//! of another channel first).

use crate::io::batch::{BATCH, GSO_GROUP_SEGMENTS, GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use std::net::SocketAddr;

use crate::sfu::worker::Transmit;

/// Fewest datagrams to one destination worth a GSO send.
pub(crate) const GSO_MIN_SEGMENTS: usize = 2;

/// A GSO run: the datagrams `sends[start..end]`, to one destination.
pub(crate) type Run = (usize, usize);

/// One step of a flush, in the order they are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// `sends[start..end]`, one datagram each.
    Singles(usize, usize),
    /// The GSO runs `runs[start..end]`, all of one segment size, in one `sendmmsg` (a run may
    /// be one datagram no larger than that size: one that must follow a run to its
    /// destination).
    Runs(usize, usize),
}

/// Sorts a flush's datagrams by destination, each destination's keeping their order (what
/// [`plan`] takes), without allocating once its two buffers have grown.
///
/// A stable sort of the datagrams themselves (56 bytes each, compared as `SocketAddr`s) took
/// a scratch allocation per flush of more than 73 and about 3% of a core's user time at
/// fan-out 100. Here a `u128` per datagram (a key of its address, then its index) is sorted,
/// and the datagrams are moved once, into their place.
#[derive(Debug, Default)]
pub(crate) struct Grouping {
    keys: Vec<u128>,
    spare: Vec<Transmit>,
}

impl Grouping {
    /// Put `sends` in the order [`plan`] takes: each destination's datagrams together, in
    /// their order. Two addresses may share a key (an IPv6 address is folded into 64 bits, and
    /// the key leaves out its flow label and scope): where two such are both in the flush,
    /// their datagrams are stable-sorted by address instead, which allocates.
    pub(crate) fn group(&mut self, sends: &mut Vec<Transmit>) {
        self.keys.clear();
        self.keys.extend(
            sends
                .iter()
                .enumerate()
                .map(|(i, t)| u128::from(address_key(&t.destination)) << 64 | i as u128),
        );
        // Already in order (one destination, or a flush of one subscriber's burst): no move.
        if !self.keys.is_sorted() {
            self.keys.sort_unstable();
            self.spare.clear();
            self.spare.extend(self.keys.iter().map(|&k| {
                let t = &mut sends[k as u64 as usize];
                Transmit {
                    destination: t.destination,
                    contents: std::mem::take(&mut t.contents),
                }
            }));
            std::mem::swap(sends, &mut self.spare);
            // Only emptied buffers are left here: nothing to free.
            self.spare.clear();
        }
        // `keys[i]` is now `sends[i]`'s. The datagrams of one key are together; were they of
        // two addresses, another address's datagram could sit between two of one's.
        let shared = self
            .keys
            .windows(2)
            .zip(sends.windows(2))
            .any(|(k, t)| k[0] >> 64 == k[1] >> 64 && t[0].destination != t[1].destination);
        if shared {
            sends.sort_by_key(|t| t.destination);
        }
    }
}

/// 64 bits that tell most addresses apart: an IPv4 address and port exactly; an IPv6 one
/// folded, with the top bit set.
fn address_key(address: &SocketAddr) -> u64 {
    match address {
        SocketAddr::V4(a) => u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()),
        SocketAddr::V6(a) => {
            let bits = a.ip().to_bits();
            let folded = (bits as u64 ^ (bits >> 64) as u64).rotate_left(16);
            (folded ^ u64::from(a.port())) | 1 << 63
        }
    }
}

/// Plan the sending of `sends`, sorted by destination (stable): into `steps`, with the GSO runs
/// they name in `runs` (index ranges of `sends`). Both are cleared first and reused, so that
/// planning allocates nothing once they have grown.
pub(crate) fn plan(sends: &[Transmit], steps: &mut Vec<Step>, runs: &mut Vec<Run>) {
    steps.clear();
    runs.clear();
    // The runs from `runs[group]` on wait to go together; `segments` datagrams in all.
    let mut group = 0;
    let mut segments = 0;
    let mut singles_from = 0;
    let mut at = 0;
    while at < sends.len() {
        let end = gso_run(sends, at);
        if end - at < GSO_MIN_SEGMENTS {
            at = end;
            continue;
        }
        if singles_from < at {
            let from = follow(
                sends,
                singles_from,
                at,
                steps,
                runs,
                &mut group,
                &mut segments,
            );
            if from < at {
                steps.push(Step::Singles(from, at));
            }
        }
        singles_from = end;
        let joins = group == runs.len()
            || (sends[runs[group].0].contents.len() == sends[at].contents.len()
                && runs.len() - group < BATCH
                && segments + (end - at) <= GSO_GROUP_SEGMENTS);
        if !joins {
            close(steps, runs, &mut group, &mut segments);
        }
        runs.push((at, end));
        segments += end - at;
        at = end;
    }
    let from = follow(
        sends,
        singles_from,
        sends.len(),
        steps,
        runs,
        &mut group,
        &mut segments,
    );
    close(steps, runs, &mut group, &mut segments);
    if from < sends.len() {
        steps.push(Step::Singles(from, sends.len()));
    }
}

/// Single datagrams from `sends[from..to]` that go where the waiting group's last run goes
/// must leave after it: each joins the group as a message of one datagram where it is no
/// larger than the group's segment size (the kernel then sends it as it is), else the group
/// closes first. Returns where the singles not taken start.
fn follow(
    sends: &[Transmit],
    mut from: usize,
    to: usize,
    steps: &mut Vec<Step>,
    runs: &mut Vec<Run>,
    group: &mut usize,
    segments: &mut usize,
) -> usize {
    while from < to && *group < runs.len() {
        let (last, _) = runs[runs.len() - 1];
        if sends[from].destination != sends[last].destination {
            break;
        }
        let fits = sends[from].contents.len() <= sends[runs[*group].0].contents.len()
            && runs.len() - *group < BATCH
            && *segments < GSO_GROUP_SEGMENTS;
        if !fits {
            close(steps, runs, group, segments);
            break;
        }
        runs.push((from, from + 1));
        *segments += 1;
        from += 1;
    }
    from
}

/// The waiting runs become a step.
fn close(steps: &mut Vec<Step>, runs: &[Run], group: &mut usize, segments: &mut usize) {
    if *group < runs.len() {
        steps.push(Step::Runs(*group, runs.len()));
        *group = runs.len();
        *segments = 0;
    }
}

/// The end of the run of datagrams from `at` that one GSO send can carry: same destination,
/// all of the first one's size except perhaps a shorter last, within the kernel's limits.
pub(crate) fn gso_run(sends: &[Transmit], at: usize) -> usize {
    let first = &sends[at];
    let size = first.contents.len();
    let mut end = at + 1;
    let mut bytes = size;
    while end < sends.len()
        && end - at < GSO_MAX_SEGMENTS
        && sends[end].destination == first.destination
        && sends[end].contents.len() <= size
        && bytes + sends[end].contents.len() <= GSO_MAX_BYTES
    {
        bytes += sends[end].contents.len();
        end += 1;
        if sends[end - 1].contents.len() < size {
            break;
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(port: u16, len: usize) -> Transmit {
        Transmit {
            destination: SocketAddr::from(([127, 0, 0, 1], port)),
            contents: vec![0; len],
        }
    }

    /// The indices of `sends` in the order the plan sends them.
    fn order(steps: &[Step], runs: &[Run]) -> Vec<usize> {
        let mut out = Vec::new();
        for step in steps {
            match *step {
                Step::Singles(start, end) => out.extend(start..end),
                Step::Runs(start, end) => {
                    for &(s, e) in &runs[start..end] {
                        out.extend(s..e);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn gso_runs_follow_destination_size_and_limits() {
        let sends = vec![
            t(1, 1200),
            t(1, 1200),
            t(1, 300), // a shorter last segment ends the run
            t(1, 1200),
            t(2, 1200),
            t(2, 1300), // longer than the first: not in the run
            t(3, 100),
        ];
        assert_eq!(gso_run(&sends, 0), 3);
        assert_eq!(gso_run(&sends, 3), 4);
        assert_eq!(gso_run(&sends, 4), 5);
        assert_eq!(gso_run(&sends, 5), 6);
        assert_eq!(gso_run(&sends, 6), 7);
        // Byte and segment limits.
        let big: Vec<Transmit> = (0..100).map(|_| t(9, 1240)).collect();
        assert_eq!(gso_run(&big, 0), GSO_MAX_BYTES / 1240);
        let small: Vec<Transmit> = (0..100).map(|_| t(9, 100)).collect();
        assert_eq!(gso_run(&small, 0), GSO_MAX_SEGMENTS);
    }

    #[test]
    fn a_keyframe_to_many_subscribers_goes_in_one_step() {
        // Four packets (the last shorter) to each of 30 subscribers, and one audio packet each,
        // which follows the video to its subscriber in the same call.
        let mut sends = Vec::new();
        for port in 1..=30 {
            sends.extend([t(port, 1200), t(port, 1200), t(port, 1200), t(port, 700)]);
            sends.push(t(port, 120));
        }
        let (mut steps, mut runs) = (Vec::new(), Vec::new());
        plan(&sends, &mut steps, &mut runs);
        assert_eq!(runs.len(), 60);
        assert_eq!(
            steps.iter().filter(|s| matches!(s, Step::Runs(..))).count(),
            1,
            "{steps:?}"
        );
        assert_eq!(order(&steps, &runs).len(), sends.len());
    }

    #[test]
    fn a_datagram_after_a_waiting_run_to_its_destination_leaves_after_it() {
        // To 1: a run of three, then a single (larger than the run's first). To 2: a run.
        let sends = vec![
            t(1, 1200),
            t(1, 1200),
            t(1, 300),
            t(1, 1250),
            t(2, 1200),
            t(2, 1200),
        ];
        let (mut steps, mut runs) = (Vec::new(), Vec::new());
        plan(&sends, &mut steps, &mut runs);
        let sent = order(&steps, &runs);
        let to_one: Vec<usize> = sent.into_iter().filter(|&i| i < 4).collect();
        assert_eq!(to_one, [0, 1, 2, 3], "{steps:?}");
    }

    #[test]
    fn two_addresses_of_one_key_are_still_each_together_and_in_order() {
        // Their halves fold to the same 64 bits.
        let a: SocketAddr = "[2001:db8:0:1::1]:5".parse().unwrap();
        let b: SocketAddr = "[2001:db8:0:2::2]:5".parse().unwrap();
        assert_eq!(address_key(&a), address_key(&b));
        let to = |d: SocketAddr, len: usize| Transmit {
            destination: d,
            contents: vec![0; len],
        };
        // In key order already, and out of it.
        for mut sends in [
            vec![to(a, 100), to(a, 101), to(b, 102), to(a, 103)],
            vec![
                t(9, 1),
                to(a, 100),
                to(b, 102),
                t(9, 2),
                to(a, 101),
                to(a, 103),
            ],
        ] {
            Grouping::default().group(&mut sends);
            let of = |d: SocketAddr| -> Vec<usize> {
                sends
                    .iter()
                    .filter(|t| t.destination == d)
                    .map(|t| t.contents.len())
                    .collect()
            };
            assert_eq!(of(a), [100, 101, 103]);
            let together = sends
                .chunk_by(|x, y| x.destination == y.destination)
                .count();
            assert_eq!(
                together,
                3 - usize::from(!sends.iter().any(|t| t.destination.port() == 9))
            );
        }
    }

    #[test]
    fn grouping_a_grouped_flush_moves_nothing_and_allocates_nothing_again() {
        let mut g = Grouping::default();
        let mut sends: Vec<Transmit> = (0..200).map(|i| t(1 + (i % 7) as u16, 100 + i)).collect();
        g.group(&mut sends);
        let grown = (g.keys.capacity(), g.spare.capacity());
        let before: Vec<usize> = sends.iter().map(|t| t.contents.len()).collect();
        g.group(&mut sends);
        let after: Vec<usize> = sends.iter().map(|t| t.contents.len()).collect();
        assert_eq!(before, after);
        let mut again: Vec<Transmit> = (0..200).map(|i| t(1 + (i % 5) as u16, 1)).collect();
        g.group(&mut again);
        assert_eq!((g.keys.capacity(), g.spare.capacity()), grown);
    }

    proptest::proptest! {
        /// Grouping keeps every datagram, puts each destination's together and keeps their
        /// order, for IPv4 and IPv6 addresses alike, two of which share a key.
        #[test]
        fn grouping_keeps_each_destination_together_and_in_order(
            datagrams in proptest::collection::vec((0usize..8, 1usize..1500), 0..400),
        ) {
            let addresses: [SocketAddr; 8] = [
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
                "127.0.0.2:1".parse().unwrap(),
                "10.0.0.1:50000".parse().unwrap(),
                "[::1]:1".parse().unwrap(),
                "[2001:db8:0:1::1]:5".parse().unwrap(),
                "[2001:db8:0:2::2]:5".parse().unwrap(),
                "[2001:db8::7]:443".parse().unwrap(),
            ];
            let mut grouped: Vec<Transmit> = datagrams
                .iter()
                .map(|&(a, len)| Transmit { destination: addresses[a], contents: vec![0; len] })
                .collect();
            Grouping::default().group(&mut grouped);
            proptest::prop_assert_eq!(grouped.len(), datagrams.len());
            for (i, &address) in addresses.iter().enumerate() {
                let sent: Vec<usize> = grouped
                    .iter()
                    .filter(|t| t.destination == address)
                    .map(|t| t.contents.len())
                    .collect();
                let offered: Vec<usize> =
                    datagrams.iter().filter(|d| d.0 == i).map(|d| d.1).collect();
                proptest::prop_assert_eq!(sent, offered);
            }
            let mut seen = Vec::new();
            for w in grouped.chunk_by(|a, b| a.destination == b.destination) {
                proptest::prop_assert!(!seen.contains(&w[0].destination));
                seen.push(w[0].destination);
            }
        }

        /// Whatever the flush, every datagram is sent once, each destination's in order, and
        /// every GSO step keeps to one segment size and the kernel's limits.
        #[test]
        fn every_destination_keeps_its_order(
            datagrams in proptest::collection::vec(
                (1u16..6, proptest::sample::select(vec![100usize, 300, 1200, 1250])),
                0..300,
            ),
        ) {
            let mut sends: Vec<Transmit> = datagrams.iter().map(|&(p, len)| t(p, len)).collect();
            Grouping::default().group(&mut sends);
            let (mut steps, mut runs) = (Vec::new(), Vec::new());
            plan(&sends, &mut steps, &mut runs);
            let sent = order(&steps, &runs);
            let mut all = sent.clone();
            all.sort_unstable();
            proptest::prop_assert_eq!(all, (0..sends.len()).collect::<Vec<_>>());
            for port in 1u16..6 {
                let mine: Vec<usize> = sent
                    .iter()
                    .copied()
                    .filter(|&i| sends[i].destination.port() == port)
                    .collect();
                proptest::prop_assert!(mine.windows(2).all(|w| w[0] < w[1]), "{:?}", mine);
            }
            for step in &steps {
                if let Step::Runs(start, end) = *step {
                    let group = &runs[start..end];
                    let size = sends[group[0].0].contents.len();
                    proptest::prop_assert!(group.len() <= BATCH);
                    proptest::prop_assert!(
                        group.iter().map(|(s, e)| e - s).sum::<usize>() <= GSO_GROUP_SEGMENTS
                    );
                    for &(s, e) in group {
                        // What the kernel takes: every segment of the size but the last,
                        // which is no larger.
                        proptest::prop_assert!(
                            sends[s..e - 1].iter().all(|x| x.contents.len() == size)
                        );
                        proptest::prop_assert!(sends[e - 1].contents.len() <= size);
                        proptest::prop_assert!(e - s <= GSO_MAX_SEGMENTS);
                        proptest::prop_assert!(
                            sends[s..e].iter().all(|x| x.destination == sends[s].destination)
                        );
                    }
                }
            }
        }
    }
}
