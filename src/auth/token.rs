//! Playback tokens: HMAC-SHA256 over (video id, expiry), carried in the URL path so every relative
//! URI in a playlist or MPD inherits it.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Why a token was refused. All map to 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed playback token")]
    Malformed,
    #[error("invalid playback token signature")]
    BadSignature,
    #[error("playback token expired")]
    Expired,
}

/// Signs and checks tokens with one server secret.
#[derive(Clone)]
pub struct TokenSigner {
    secret: Vec<u8>,
}

impl TokenSigner {
    /// A signer for this secret (at least 16 bytes are expected).
    pub fn new(secret: &[u8]) -> TokenSigner {
        TokenSigner { secret: secret.to_vec() }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key size");
        mac.update(payload.as_bytes());
        mac
    }

    /// Mints `{video_id}.{expiry_unix}.{signature}`.
    pub fn mint(&self, video_id: &str, expires_unix: u64) -> String {
        let payload = format!("{video_id}.{expires_unix}");
        let sig = self.mac(&payload).finalize().into_bytes();
        format!("{payload}.{}", B64.encode(sig))
    }

    /// Checks signature (constant time) and expiry; returns the video id the token opens.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<String, TokenError> {
        let mut parts = token.rsplitn(2, '.');
        let sig_b64 = parts.next().ok_or(TokenError::Malformed)?;
        let payload = parts.next().ok_or(TokenError::Malformed)?;
        let (video_id, expiry) = payload.rsplit_once('.').ok_or(TokenError::Malformed)?;
        if video_id.is_empty() || video_id.len() > 64 {
            return Err(TokenError::Malformed);
        }
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let sig = B64.decode(sig_b64).map_err(|_| TokenError::Malformed)?;
        self.mac(payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        if now_unix >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(video_id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A minted token opens its video until it expires, and changing any one character of
        /// it (id, expiry, separator or signature) makes it worthless.
        #[test]
        fn tokens_verify_only_as_minted(id in "[a-z0-9-]{1,64}", expiry in 1u64..u64::MAX, at in any::<prop::sample::Index>(), c in "[a-zA-Z0-9._=-]") {
            let s = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
            let t = s.mint(&id, expiry);
            prop_assert_eq!(s.verify(&t, expiry - 1), Ok(id.clone()));
            prop_assert_eq!(s.verify(&t, expiry), Err(TokenError::Expired));
            let mut chars: Vec<char> = t.chars().collect();
            let i = at.index(chars.len());
            let c = c.chars().next().unwrap();
            prop_assume!(chars[i] != c);
            chars[i] = c;
            let changed: String = chars.into_iter().collect();
            prop_assert!(s.verify(&changed, 0).is_err(), "{changed} verified");
            prop_assert!(TokenSigner::new(b"another secret of 32 bytes......").verify(&t, 0).is_err());
        }

        /// Any string is refused without a panic.
        #[test]
        fn any_string_is_refused(t in "\\PC{0,200}") {
            let s = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
            prop_assert!(s.verify(&t, 0).is_err());
        }
    }

    /// Arbitrary strings never panic and never verify.
    #[test]
    fn garbage_never_verifies() {
        let s = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let good = s.mint("abc", 100);
        let mut x: u64 = 99;
        for i in 0..20_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            let len = (x >> 58) as usize;
            let mut t: Vec<u8> = (0..len).map(|k| b"ab.c-_0129Z=%/"[((x >> (k % 50)) % 14) as usize]).collect();
            if i % 3 == 0 {
                t = good.as_bytes().to_vec();
                let pos = (x as usize) % t.len();
                t[pos] = t[pos].wrapping_add(1 + (x % 5) as u8);
            }
            let t = String::from_utf8_lossy(&t).to_string();
            if t != good {
                assert!(s.verify(&t, 0).is_err(), "{t}");
            }
        }
    }

    #[test]
    fn mint_verify_and_refusals() {
        let s = TokenSigner::new(b"0123456789abcdef0123456789abcdef");
        let t = s.mint("vid-1", 1000);
        assert_eq!(s.verify(&t, 999).unwrap(), "vid-1");
        assert_eq!(s.verify(&t, 1000), Err(TokenError::Expired));
        // Another video's id with this signature.
        let forged = t.replacen("vid-1", "vid-2", 1);
        assert_eq!(s.verify(&forged, 10), Err(TokenError::BadSignature));
        // Extended expiry.
        let forged = t.replacen(".1000.", ".9999.", 1);
        assert_eq!(s.verify(&forged, 10), Err(TokenError::BadSignature));
        // Truncated / altered signature.
        assert!(s.verify(&t[..t.len() - 2], 10).is_err());
        let mut altered = t.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert!(s.verify(std::str::from_utf8(&altered).unwrap(), 10).is_err());
        assert_eq!(s.verify("garbage", 10), Err(TokenError::Malformed));
        // A different secret.
        assert_eq!(TokenSigner::new(b"other-secret-other-secret").verify(&t, 10), Err(TokenError::BadSignature));
    }
}
