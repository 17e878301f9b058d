//! Versioned migrations, applied in order and recorded in `PRAGMA user_version`.

/// Each entry migrates the schema from version `index` to `index + 1`. Never edit a released
/// entry: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE links (
        reference_id         TEXT PRIMARY KEY,
        farmflow_id          INTEGER NOT NULL UNIQUE,
        kounta_id            INTEGER UNIQUE,
        kounta_snapshot      TEXT,
        farmflow_snapshot    TEXT,
        kounta_verified      INTEGER NOT NULL DEFAULT 0,
        state                TEXT NOT NULL
                             CHECK (state IN ('active', 'delete_blocked', 'tombstone')),
        last_verified_at     INTEGER,
        last_synced_at       INTEGER,
        last_error           TEXT,
        consecutive_failures INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX links_by_verification ON links (last_verified_at);

    CREATE TABLE journal (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id       TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        side         TEXT NOT NULL CHECK (side IN ('kounta', 'farmflow')),
        op           TEXT NOT NULL,
        reference_id TEXT,
        kounta_id    INTEGER,
        farmflow_id  INTEGER,
        payload      TEXT NOT NULL,
        watermark    INTEGER,
        settled_at   INTEGER,
        outcome      TEXT
    );
    CREATE INDEX journal_unsettled ON journal (settled_at) WHERE settled_at IS NULL;

    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        started_at  INTEGER NOT NULL,
        finished_at INTEGER,
        dry_run     INTEGER NOT NULL,
        exit_code   INTEGER,
        summary     TEXT
    );
    CREATE INDEX runs_by_start ON runs (started_at);

    CREATE TABLE conflicts (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id         TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        reference_id   TEXT NOT NULL,
        field          TEXT NOT NULL,
        kounta_value   TEXT NOT NULL,
        farmflow_value TEXT NOT NULL,
        winner         TEXT NOT NULL,
        acknowledged   INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE tokens (
        name          TEXT PRIMARY KEY,
        access_token  TEXT NOT NULL,
        refresh_token TEXT NOT NULL,
        expires_at    INTEGER,
        updated_at    INTEGER NOT NULL
    );

    CREATE TABLE hints (
        kounta_id   INTEGER PRIMARY KEY,
        topic       TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        deliveries  INTEGER NOT NULL DEFAULT 1
    );

    CREATE TABLE attention (
        kind       TEXT NOT NULL,
        subject    TEXT NOT NULL,
        message    TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen  INTEGER NOT NULL,
        PRIMARY KEY (kind, subject)
    );
    "#,
    // 2: the request ledger. Every farmsync process on this state DB records the API requests
    // it is granted (in leases of `n`, stamped at the end of the lease period, Unix ms), so the
    // rate limit holds across processes: a restart, a timer run after a daemon, `check` beside
    // one. Rows older than a few windows are pruned as new ones come.
    r#"
    CREATE TABLE request_grants (
        id     INTEGER PRIMARY KEY,
        api    TEXT NOT NULL CHECK (api IN ('kounta', 'farmflow')),
        holder INTEGER NOT NULL,
        at_ms  INTEGER NOT NULL,
        n      INTEGER NOT NULL CHECK (n > 0)
    );
    CREATE INDEX request_grants_by_time ON request_grants (api, at_ms);
    "#,
    // 3: operator control. History of every settled write (per field before → after, taken
    // from the intent when it settles); conflicts a person settles; deletions waiting for a
    // person; links parked out of scope.
    r#"
    ALTER TABLE links ADD COLUMN parked TEXT CHECK (parked IN ('untagged', 'paused'));

    ALTER TABLE journal ADD COLUMN cycle TEXT;
    ALTER TABLE journal ADD COLUMN changes TEXT;

    CREATE TABLE history (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        at           INTEGER NOT NULL,
        run_id       TEXT NOT NULL,
        cycle        TEXT NOT NULL,
        side         TEXT NOT NULL CHECK (side IN ('kounta', 'farmflow')),
        action       TEXT NOT NULL,
        reference_id TEXT,
        kounta_id    INTEGER,
        farmflow_id  INTEGER,
        outcome      TEXT NOT NULL CHECK (outcome IN ('applied', 'unconfirmed')),
        changes      TEXT NOT NULL
    );
    CREATE INDEX history_by_time ON history (at);
    CREATE INDEX history_by_reference ON history (reference_id, at);

    ALTER TABLE conflicts ADD COLUMN resolution TEXT
        CHECK (resolution IN ('kounta', 'farmflow', 'dismissed'));
    ALTER TABLE conflicts ADD COLUMN resolved_at INTEGER;
    ALTER TABLE conflicts ADD COLUMN applied_at INTEGER;

    CREATE TABLE delete_queue (
        reference_id TEXT PRIMARY KEY,
        action       TEXT NOT NULL
                     CHECK (action IN ('delete_farmflow', 'tag_kounta', 'unlink_kounta')),
        kounta_id    INTEGER,
        farmflow_id  INTEGER NOT NULL,
        detail       TEXT NOT NULL,
        queued_at    INTEGER NOT NULL,
        last_seen    INTEGER NOT NULL,
        decision     TEXT CHECK (decision IN ('approved', 'rejected')),
        decided_at   INTEGER
    );
    "#,
    // 4 (operations: metrics and alerts): metric values that outlive a process — counters every
    // `sync` and the daemon add to, so they keep counting across restarts and between a timer
    // and a daemon — and the health last announced to `[alerts] webhook_url`, so a restart does
    // not announce it again. `journal_by_run` finds the writes of one run for the metrics.
    r#"
    CREATE TABLE metric_values (
        name   TEXT NOT NULL,
        labels TEXT NOT NULL,
        value  REAL NOT NULL,
        PRIMARY KEY (name, labels)
    );
    CREATE TABLE announced_health (
        id           INTEGER PRIMARY KEY CHECK (id = 1),
        healthy      INTEGER NOT NULL,
        problems     TEXT NOT NULL,
        announced_at INTEGER NOT NULL
    );
    CREATE INDEX journal_by_run ON journal (run_id);
    "#,
];

/// The schema version this build writes.
pub(super) const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;
