//! Verification of the hash chain: every byte of every stored event, the order of seqs, and
//! the head, optionally against a head an auditor kept from earlier.

use crate::block::{self, Block, Hash};
use crate::error::{Error, Result};
use crate::log::{Head, Ledger};

/// The outcome of [`verify_log`].
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Events whose chain checked out.
    pub events: u64,
    pub head: Head,
    /// Each problem, the first bad seq first.
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub seq: u64,
    pub what: String,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn first_bad_seq(&self) -> Option<u64> {
        self.problems.first().map(|p| p.seq)
    }
}

/// Walks the whole chain from seq 1. With `against = Some((seq, hash))`, also proves that the
/// log still extends that earlier head: the event at `seq` must carry exactly `hash`.
pub fn verify_log(ledger: &Ledger, against: Option<(u64, Hash)>) -> Result<VerifyReport> {
    let reader = ledger.reader()?;
    let head = reader.head();
    let mut problems = Vec::new();
    let mut prev: Hash = [0; 32];
    let mut expected = 1u64;
    let mut good = 0u64;
    let mut broken = false;
    let mut against_seen = false;
    if let Some((0, ahash)) = against {
        // The empty log's head: every log extends it.
        against_seen = true;
        if ahash != [0; 32] {
            problems.push(Problem {
                seq: 0,
                what: format!(
                    "the log does not extend the given head: seq 0 (the empty log) has hash {}, \
                     not {}",
                    block::hex(&[0; 32]),
                    block::hex(&ahash)
                ),
            });
        }
    }
    reader.raw_blocks(|first, bytes| {
        if first != expected {
            problems.push(Problem {
                seq: expected,
                what: if first > expected {
                    format!("events {expected}..{} are missing", first - 1)
                } else {
                    format!("block starting at seq {first} overlaps earlier events")
                },
            });
            return Ok(false);
        }
        let block = match Block::new(first, bytes) {
            Ok(b) => b,
            Err(e) => {
                problems.push(problem(first, e));
                return Ok(false);
            }
        };
        for i in 0..block.len() {
            let seq = first + i as u64;
            let (stored_hash, archive) = match block.entry(i) {
                Ok(x) => x,
                Err(e) => {
                    problems.push(problem(seq, e));
                    return Ok(false);
                }
            };
            let hash = block::chain(&prev, archive);
            if &hash != stored_hash {
                problems.push(Problem {
                    seq,
                    what: "hash does not match its bytes and the previous hash: the event was \
                           altered, removed, reordered or replaced"
                        .into(),
                });
                return Ok(false);
            }
            match block::access(seq, archive) {
                Ok(ev) if ev.seq.to_native() == seq => {}
                Ok(ev) => {
                    problems.push(Problem {
                        seq,
                        what: format!("event says seq {} at position {seq}", ev.seq.to_native()),
                    });
                    return Ok(false);
                }
                Err(e) => {
                    problems.push(problem(seq, e));
                    return Ok(false);
                }
            }
            if let Some((aseq, ahash)) = against {
                if aseq == seq {
                    against_seen = true;
                    if hash != ahash {
                        problems.push(Problem {
                            seq,
                            what: format!(
                                "the log does not extend the given head: seq {seq} has hash {}, \
                                 not {}",
                                block::hex(&hash),
                                block::hex(&ahash)
                            ),
                        });
                        return Ok(false);
                    }
                }
            }
            prev = hash;
            good = seq;
        }
        expected = first + block.len() as u64;
        Ok(true)
    })?;
    broken |= !problems.is_empty();
    if !broken {
        if good != head.seq {
            problems.push(Problem {
                seq: good + 1,
                what: format!(
                    "the head says seq {} but the log ends at seq {good}: events were truncated",
                    head.seq
                ),
            });
        } else if prev != head.hash {
            problems.push(Problem {
                seq: good,
                what: "the last event's hash does not match the recorded head".into(),
            });
        }
    }
    if let Some((aseq, _)) = against {
        if !against_seen && problems.is_empty() {
            problems.push(Problem {
                seq: aseq,
                what: format!(
                    "the log ends at seq {good}, before the given head's seq {aseq}: it was \
                     truncated"
                ),
            });
        }
    }
    Ok(VerifyReport {
        events: good,
        head,
        problems,
    })
}

fn problem(seq: u64, e: Error) -> Problem {
    let what = match e {
        Error::Corrupt { why, .. } => why,
        other => other.to_string(),
    };
    Problem { seq, what }
}
