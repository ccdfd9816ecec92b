//! Path leases in Redis: which node owns a live path, with a fencing token.
//!
//! `kawa:lease:{path}` holds `{token}:{node}` with a TTL, renewed by the owner while the
//! stream is live. `kawa:fence:{path}` counts every acquisition; the token is that count,
//! so a newer owner always holds a larger one. Every write that must come from the owner
//! (the playlist state here, the playlists in S3 through [`super::Cluster::is_current`])
//! checks the token in the same atomic step, so a replaced owner's late writes are refused.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: lease, fence. ARGV: node, ttl ms, force ("1": take it from a live owner).
/// Returns "+{token}" when taken, "-{current lease value}" when another node holds it.
pub(super) static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local current = redis.call('GET', KEYS[1])
        if current and ARGV[3] ~= '1' then
          local sep = string.find(current, ':', 1, true)
          if not sep or string.sub(current, sep + 1) ~= ARGV[1] then
            return '-' .. current
          end
        end
        local token = redis.call('INCR', KEYS[2])
        redis.call('SET', KEYS[1], token .. ':' .. ARGV[1], 'PX', ARGV[2])
        return '+' .. token
        "#,
    )
});

/// KEYS: lease, fence. ARGV: lease value, ttl ms, token. 1 = still ours (renewed, or
/// taken again when it lapsed and nobody took it since), 0 = lost.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        local current = redis.call('GET', KEYS[1])
        if current == ARGV[1] then
          redis.call('PEXPIRE', KEYS[1], ARGV[2])
          return 1
        end
        if not current and redis.call('GET', KEYS[2]) == ARGV[3] then
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return 1
        end
        return 0
        "#,
    )
});

/// KEYS: lease. ARGV: lease value. Deletes the lease if it is still ours.
pub(super) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
          return redis.call('DEL', KEYS[1])
        end
        return 0
        "#,
    )
});

/// KEYS: fence, state. ARGV: token, state JSON, ttl seconds. 1 = stored, 0 = fenced.
pub(super) static SAVE_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
        return 1
        "#,
    )
});

pub(super) fn lease_key(path: &str) -> String {
    format!("kawa:lease:{path}")
}

pub(super) fn fence_key(path: &str) -> String {
    format!("kawa:fence:{path}")
}

pub(super) fn state_key(path: &str) -> String {
    format!("kawa:state:{path}")
}

/// KEYS: fence, stored, then the parts lists of segments now in S3 (dropped). ARGV:
/// token, rendition, segment name, ttl seconds. 1 = stored, 0 = fenced.
pub(super) static SAVE_STORED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
        redis.call('EXPIRE', KEYS[2], ARGV[4])
        for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
        return 1
        "#,
    )
});

/// Per rendition, the newest segment of a playlist the owner put in S3.
pub(super) fn stored_key(path: &str) -> String {
    format!("kawa:stored:{path}")
}

pub(super) fn node_key(node: &str) -> String {
    format!("kawa:node:{node}")
}

/// A lease this node holds on one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub path: String,
    pub token: u64,
    pub(super) value: String,
}

/// Who holds a path's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node: String,
    pub token: u64,
}

impl Holder {
    /// Parses a lease value, `{token}:{node}`.
    pub fn parse(value: &str) -> Option<Self> {
        let (token, node) = value.split_once(':')?;
        Some(Self {
            node: node.to_owned(),
            token: token.parse().ok()?,
        })
    }
}

/// What an acquisition got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    Taken(Lease),
    HeldBy(Holder),
}

/// Reads ACQUIRE's answer.
pub(super) fn acquired(path: &str, node: &str, answer: &str) -> Option<Acquired> {
    if let Some(token) = answer.strip_prefix('+') {
        let token: u64 = token.parse().ok()?;
        return Some(Acquired::Taken(Lease {
            path: path.to_owned(),
            token,
            value: format!("{token}:{node}"),
        }));
    }
    answer
        .strip_prefix('-')
        .and_then(Holder::parse)
        .map(Acquired::HeldBy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_scripts_answers() {
        assert_eq!(
            acquired("live", "a", "+7"),
            Some(Acquired::Taken(Lease {
                path: "live".into(),
                token: 7,
                value: "7:a".into()
            }))
        );
        assert_eq!(
            acquired("live", "a", "-6:node-b"),
            Some(Acquired::HeldBy(Holder {
                node: "node-b".into(),
                token: 6
            }))
        );
        assert_eq!(acquired("live", "a", "+x"), None);
        assert_eq!(acquired("live", "a", "-garbage"), None);
    }
}
