-- warden's durable state. Every secret is in a *_sealed column (AES-256-GCM-SIV, bound to
-- purpose, user, server and key id); key_id duplicates the sealed header so rotation can find
-- rows by key. Times are Unix seconds.

CREATE TABLE servers (
    user_id     TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    transport   TEXT    NOT NULL,   -- JSON, no secrets
    auth_type   TEXT    NOT NULL,   -- none | bearer | headers | env | oauth
    auth_sealed BYTEA   NOT NULL,
    key_id      BIGINT  NOT NULL,
    version     BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (user_id, name)
);

CREATE TABLE grants (
    user_id       TEXT    NOT NULL,
    server        TEXT    NOT NULL,
    tokens_sealed BYTEA   NOT NULL,
    key_id        BIGINT  NOT NULL,
    expires_at    BIGINT ,
    generation    BIGINT  NOT NULL,
    status        TEXT    NOT NULL,  -- active | reauthorization_required
    client_id     TEXT,
    issuer        TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (user_id, server),
    FOREIGN KEY (user_id, server) REFERENCES servers (user_id, name) ON DELETE CASCADE
);
CREATE INDEX grants_active_expiry ON grants (status, expires_at);

CREATE TABLE pending_authorizations (
    state_hash  TEXT    NOT NULL PRIMARY KEY,  -- SHA-256 of the OAuth state; the state itself is sealed
    user_id     TEXT    NOT NULL,
    server      TEXT    NOT NULL,
    sealed      BYTEA   NOT NULL,
    key_id      BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    created_at  BIGINT  NOT NULL,
    FOREIGN KEY (user_id, server) REFERENCES servers (user_id, name) ON DELETE CASCADE
);
CREATE INDEX pending_by_owner ON pending_authorizations (user_id, server);
CREATE INDEX pending_by_expiry ON pending_authorizations (expires_at);

CREATE TABLE audit_events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at       BIGINT  NOT NULL,
    user_id  TEXT    NOT NULL,
    server   TEXT,
    event    TEXT    NOT NULL,
    detail   TEXT    NOT NULL
);
CREATE INDEX audit_by_user ON audit_events (user_id, id);
