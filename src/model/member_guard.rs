//! The member guard of a rendered app: how few live members ([`MemberGuard::min_members`]) and
//! how large a drop from the last applied set ([`MaxShrink`]) may be rendered. A registry
//! outage, a partition between the members and ZooKeeper, or a mass session expiry makes the
//! member list shrink although the members still serve; rendering that list guts the upstream.
//! KingPin refuses a set below 50% of the current one; so do we, by default.
//!
//! Pure rule: the renderer counts the members and reads the applied count from the state file,
//! then asks [`judge`].

use std::fmt;

/// How far the member count may fall below the last applied count in one render
/// (`[app.render] max_shrink`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxShrink {
    /// No limit (`"off"`, or `"100%"`): every drop is rendered, down to `min_members`.
    Off,
    /// At most this percentage (0-99) of the applied count may go at once: `"50%"` renders 20 of
    /// 40 and holds 19.
    Percent(u8),
    /// At most this many members may go at once: `10` renders 30 of 40 and holds 29; `0` holds
    /// any drop.
    Count(usize),
}

/// The default for an app that refuses an empty list: KingPin's 50%. A set that halves within
/// one render (`max_wait`, 2 s by default) is far more often an outage than a scale-down, and a
/// held render is loud (status, `/healthz`, `zkcoord_render_held`) while a gutted upstream is
/// an outage of its own.
pub const DEFAULT_MAX_SHRINK: MaxShrink = MaxShrink::Percent(50);

impl MaxShrink {
    /// Parses `"50%"` (0-100%; 100% is off), a count like `"10"`, or `"off"`; Err says what was
    /// expected.
    pub fn parse(s: &str) -> Result<MaxShrink, String> {
        let t = s.trim();
        let expected = || format!("expected a percentage from \"0%\" to \"100%\" (like \"50%\"), a count of members (like 10), or \"off\"; got {s:?}");
        if t == "off" {
            return Ok(MaxShrink::Off);
        }
        if let Some(p) = t.strip_suffix('%') {
            return match p.trim().parse::<u8>() {
                Ok(100) => Ok(MaxShrink::Off),
                Ok(p) if p < 100 => Ok(MaxShrink::Percent(p)),
                _ => Err(expected()),
            };
        }
        t.parse::<usize>().map(MaxShrink::Count).map_err(|_| expected())
    }

    /// The smallest count that may follow `applied`: a drop to fewer is held.
    pub fn floor(self, applied: usize) -> usize {
        match self {
            MaxShrink::Off => 0,
            // Exact: n may follow `applied` when (applied - n) * 100 <= p * applied.
            MaxShrink::Percent(p) => (applied * (100 - usize::from(p))).div_ceil(100),
            MaxShrink::Count(n) => applied.saturating_sub(n),
        }
    }
}

impl fmt::Display for MaxShrink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxShrink::Off => f.write_str("off"),
            MaxShrink::Percent(p) => write!(f, "{p}%"),
            MaxShrink::Count(n) => write!(f, "{n}"),
        }
    }
}

/// A rendered app's guard, as its config says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberGuard {
    /// Fewer live members than this are never rendered (`allow_empty = true` is 0, else 1).
    pub min_members: usize,
    /// How far below the last applied count one render may go.
    pub max_shrink: MaxShrink,
}

/// Why a render is held back; its text is what the status `error` and `/healthz` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Fewer live members than `min_members`.
    TooFew {
        /// Members seen.
        live: usize,
        /// The configured minimum.
        min_members: usize,
    },
    /// A drop below what `max_shrink` allows from the last applied count.
    Shrink {
        /// Members seen.
        live: usize,
        /// Members in the file now.
        applied: usize,
        /// The limit.
        max_shrink: MaxShrink,
        /// The smallest count it allows.
        floor: usize,
    },
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::TooFew { live: 0, min_members: 1 } => write!(f, "held: no live members; the file keeps its last content (allow_empty = false)"),
            Hold::TooFew { live, min_members } => {
                write!(f, "held: {live} live member(s), min_members {min_members}; the file keeps its last content")
            }
            Hold::Shrink { live, applied, max_shrink, floor } => write!(
                f,
                "held: {live} live member(s) of {applied} applied; max_shrink {max_shrink} refuses a drop below {floor}; the file keeps its last content (members coming back end the hold; raise max_shrink and reload to accept it)"
            ),
        }
    }
}

/// The one decision: may `live` members be rendered over a file last rendered from `applied`
/// members (None: nothing known, e.g. a first render, so only `min_members` applies)?
pub fn judge(guard: MemberGuard, live: usize, applied: Option<usize>) -> Result<(), Hold> {
    if live < guard.min_members {
        return Err(Hold::TooFew { live, min_members: guard.min_members });
    }
    if let Some(applied) = applied {
        let floor = guard.max_shrink.floor(applied);
        if live < floor {
            return Err(Hold::Shrink { live, applied, max_shrink: guard.max_shrink, floor });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(min_members: usize, max_shrink: &str) -> MemberGuard {
        MemberGuard { min_members, max_shrink: MaxShrink::parse(max_shrink).unwrap() }
    }

    #[test]
    fn a_drop_from_40_to_3_is_held_and_says_why() {
        let hold = judge(guard(1, "50%"), 3, Some(40)).unwrap_err();
        assert_eq!(hold, Hold::Shrink { live: 3, applied: 40, max_shrink: MaxShrink::Percent(50), floor: 20 });
        let text = hold.to_string();
        assert!(text.starts_with("held: 3 live member(s) of 40 applied; max_shrink 50% refuses a drop below 20"), "{text}");
        assert_eq!(judge(guard(1, "50%"), 20, Some(40)), Ok(()));
        assert!(judge(guard(1, "50%"), 19, Some(40)).is_err());
    }

    #[test]
    fn percentages_round_in_favour_of_holding() {
        // 3 -> 1 is a 67% drop, 5 -> 3 a 40% one; 1 -> 0 is always refused by a percentage.
        assert_eq!(MaxShrink::Percent(50).floor(3), 2);
        assert_eq!(MaxShrink::Percent(50).floor(5), 3);
        assert_eq!(MaxShrink::Percent(50).floor(2), 1);
        assert_eq!(MaxShrink::Percent(50).floor(1), 1);
        assert_eq!(MaxShrink::Percent(0).floor(40), 40);
        assert_eq!(MaxShrink::Percent(99).floor(1000), 10);
    }

    #[test]
    fn absolute_counts_zero_and_off() {
        assert_eq!(judge(guard(1, "10"), 30, Some(40)), Ok(()));
        assert!(judge(guard(1, "10"), 29, Some(40)).is_err());
        // max_shrink = 0: the set may only grow; any drop is held.
        assert!(judge(guard(1, "0"), 39, Some(40)).is_err());
        assert_eq!(judge(guard(1, "0"), 41, Some(40)), Ok(()));
        assert_eq!(judge(guard(1, "off"), 1, Some(40)), Ok(()));
        assert_eq!(MaxShrink::parse("100%"), Ok(MaxShrink::Off));
    }

    #[test]
    fn min_members_applies_with_or_without_a_known_count() {
        // A first render (no state file) knows no applied count: only min_members applies.
        assert_eq!(judge(guard(5, "50%"), 5, None), Ok(()));
        assert_eq!(judge(guard(5, "50%"), 4, None), Err(Hold::TooFew { live: 4, min_members: 5 }));
        assert!(judge(guard(1, "50%"), 0, None).unwrap_err().to_string().contains("no live members"));
        // allow_empty = true is min_members = 0: an empty first render is written...
        assert_eq!(judge(guard(0, "off"), 0, None), Ok(()));
        // ... but an explicit max_shrink still refuses the drop to nothing.
        assert!(judge(guard(0, "50%"), 0, Some(4)).is_err());
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        for bad in ["150%", "-1", "half", "50 percent", "%", ""] {
            let e = MaxShrink::parse(bad).unwrap_err();
            assert!(e.contains("expected a percentage") && e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert_eq!(MaxShrink::parse(" 25% "), Ok(MaxShrink::Percent(25)));
        assert_eq!(MaxShrink::Percent(25).to_string(), "25%");
    }
}
