//! Bearer tokens: HS256 with `JWT_SECRET`, RS256 with a configured public key, checked by the
//! `jsonwebtoken` crate (signature, `exp`, `nbf`, and issuer and audience when configured).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult};

/// The claims the gateway reads. `role` is used when the user is first provisioned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// A string or an array of strings (identity providers send both); the library checks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Verification settings, from `JWT_SECRET`, `JWT_PUBLIC_KEY` / `JWT_PUBLIC_KEY_FILE`,
/// `JWT_ISSUER`, `JWT_AUDIENCE` and `JWT_LEEWAY_SECS`.
#[derive(Clone, Default)]
pub struct JwtConfig {
    pub secret: Option<Vec<u8>>,
    /// PEM of an RSA public key.
    pub public_key_pem: Option<Vec<u8>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("hs256", &self.secret.is_some())
            .field("rs256", &self.public_key_pem.is_some())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl JwtConfig {
    pub fn from_env() -> anyhow::Result<Self> {
        let public_key_pem = match (env("JWT_PUBLIC_KEY"), env("JWT_PUBLIC_KEY_FILE")) {
            (Some(pem), _) => Some(pem.into_bytes()),
            (None, Some(path)) => Some(
                std::fs::read(&path)
                    .map_err(|e| anyhow::anyhow!("JWT_PUBLIC_KEY_FILE {path}: {e}"))?,
            ),
            (None, None) => None,
        };
        let cfg = JwtConfig {
            secret: env("JWT_SECRET").map(String::into_bytes),
            public_key_pem,
            issuer: env("JWT_ISSUER"),
            audience: env("JWT_AUDIENCE"),
            leeway_secs: crate::config::env_num("JWT_LEEWAY_SECS", 30u64)?,
        };
        if let Some(pem) = &cfg.public_key_pem {
            DecodingKey::from_rsa_pem(pem)
                .map_err(|e| anyhow::anyhow!("JWT public key is not an RSA PEM key: {e}"))?;
        }
        if cfg.secret.as_ref().is_some_and(|s| s.len() < 32) {
            anyhow::bail!("JWT_SECRET must be at least 32 bytes");
        }
        Ok(cfg)
    }

    /// Authentication is on when any verification key is configured.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.public_key_pem.is_some()
    }

    /// Verifies a token and returns its claims; every failure is `UNAUTHENTICATED`.
    pub fn verify(&self, token: &str) -> AppResult<Claims> {
        let unauth = |why: String| AppError::Unauthenticated(format!("invalid token: {why}"));
        // `alg: none` and unknown algorithms fail here: the crate knows no such algorithm.
        let header = jsonwebtoken::decode_header(token).map_err(|e| unauth(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.as_deref().map(DecodingKey::from_secret),
            Algorithm::RS256 => match &self.public_key_pem {
                Some(pem) => Some(DecodingKey::from_rsa_pem(pem).map_err(AppError::internal)?),
                None => None,
            },
            _ => None,
        }
        .ok_or_else(|| unauth(format!("algorithm {:?} is not accepted", header.alg)))?;
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| unauth(e.to_string()))?;
        if data.claims.sub.trim().is_empty() {
            return Err(unauth("empty sub".into()));
        }
        Ok(data.claims)
    }

    /// Mints an HS256 token (the `token` command, for development).
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let secret = self
            .secret
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("JWT_SECRET must be set to mint a token"))?;
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret),
        )?)
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> JwtConfig {
        JwtConfig {
            secret: Some(b"0123456789abcdef0123456789abcdef".to_vec()),
            leeway_secs: 0,
            ..Default::default()
        }
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            role: Some("user".into()),
            email: None,
            name: None,
        }
    }

    #[test]
    fn accepts_a_good_token_and_refuses_bad_ones() {
        let c = cfg();
        let good = c.mint(&claims(now() + 60)).expect("mint");
        assert_eq!(c.verify(&good).expect("valid").sub, "alice");

        let expired = c.mint(&claims(now() - 10)).expect("mint");
        assert_eq!(
            c.verify(&expired).map(|_| ()).map_err(|e| e.code()),
            Err("UNAUTHENTICATED")
        );

        let mut early = claims(now() + 600);
        early.nbf = Some(now() + 300);
        let early = c.mint(&early).expect("mint");
        assert!(c.verify(&early).is_err(), "nbf in the future");

        let other = JwtConfig {
            secret: Some(b"another-secret-another-secret-xx".to_vec()),
            ..cfg()
        };
        let forged = other.mint(&claims(now() + 60)).expect("mint");
        assert!(c.verify(&forged).is_err(), "bad signature");

        // alg: none, unsigned.
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"alice","exp":{}}}"#, now() + 60))
        );
        assert!(c.verify(&none).is_err(), "alg none");
        assert!(c.verify("garbage").is_err());
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let c = JwtConfig {
            issuer: Some("https://idp.test".into()),
            audience: Some("bughive".into()),
            ..cfg()
        };
        let mut ok = claims(now() + 60);
        ok.iss = Some("https://idp.test".into());
        ok.aud = Some("bughive".into());
        let mut array = ok.clone();
        array.aud = Some(serde_json::json!(["other", "bughive"]));
        assert!(
            c.verify(&c.mint(&array).expect("mint")).is_ok(),
            "array aud"
        );
        assert!(c.verify(&c.mint(&ok).expect("mint")).is_ok());
        let mut wrong = ok.clone();
        wrong.aud = Some("other".into());
        assert!(c.verify(&c.mint(&wrong).expect("mint")).is_err());
        let mut missing = ok;
        missing.iss = None;
        assert!(c.verify(&c.mint(&missing).expect("mint")).is_err());
    }
}
