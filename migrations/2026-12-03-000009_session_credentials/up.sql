-- A crawl session's credentials for the crawled site, sealed by the gateway (XChaCha20-Poly1305
-- under CREDENTIALS_KEY, the session id as associated data). Apart from the session row, so no
-- `to_jsonb(session)` (audit entries, events) and no session read ever carries them.
CREATE TABLE session_credentials (
    session_id uuid PRIMARY KEY REFERENCES crawl_sessions (id) ON DELETE CASCADE,
    -- Which key sealed it: a fingerprint of the key, never the key.
    key_id     text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    nonce      bytea NOT NULL CHECK (length(nonce) = 24),
    ciphertext bytea NOT NULL CHECK (length(ciphertext) >= 16),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Rotation re-seals what an old key sealed.
CREATE INDEX idx_session_credentials_key ON session_credentials (key_id);

CREATE TRIGGER session_credentials_touch_updated_at BEFORE UPDATE ON session_credentials
    FOR EACH ROW EXECUTE FUNCTION bughive_touch_updated_at();
