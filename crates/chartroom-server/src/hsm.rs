//! Keys in a hardware security module through PKCS#11 (tested against SoftHSM2).
//!
//! - The **master key** is kept wrapped by an AES-256 key that never leaves the HSM
//!   (`CKA_SENSITIVE`, not extractable): `keys/master.wrapped` holds it sealed with AES-GCM by the
//!   HSM, and every start (or admin command) asks the HSM to open it.
//! - The **checkpoint signing key** is an Ed25519 key pair generated in the HSM; checkpoints are
//!   signed there (`CKM_EDDSA`) and verify with the ordinary Ed25519 public key.
//!
//! Keys are named by a PKCS#11 URI (RFC 7512):
//! `pkcs11:token=chartroom;object=chartroom-master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/chartroom-server/hsm.pin`.
//! The PIN comes from the `pin-source` file (mode 0600) or `$CHARTROOM_HSM_PIN`, never from the
//! URI itself. Every use of an HSM key is recorded in the audit trail (see [`take_uses`]).

use std::path::PathBuf;
use std::sync::Mutex;

use chartroom_audit::Event;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::ServerError;

/// `$CHARTROOM_HSM_PIN`: the user PIN when the URI names no `pin-source`.
pub const PIN_ENV: &str = "CHARTROOM_HSM_PIN";
/// DER of the Ed25519 curve OID (1.3.101.112), for `CKA_EC_PARAMS`.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const GCM_IV: usize = 12;

/// A key in an HSM, as a PKCS#11 URI names it.
#[derive(Clone, PartialEq, Eq)]
pub struct HsmKey {
    module: PathBuf,
    token: String,
    object: String,
    pin_source: Option<PathBuf>,
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HsmKey")
            .field("token", &self.token)
            .field("object", &self.object)
            .finish_non_exhaustive()
    }
}

fn hsm_error(what: impl std::fmt::Display) -> ServerError {
    ServerError::Hsm(what.to_string())
}

impl HsmKey {
    /// Parses `pkcs11:token=…;object=…?module-path=…&pin-source=file:…`.
    pub fn parse(uri: &str) -> Result<HsmKey, ServerError> {
        let bad = |what: &str| hsm_error(format!("the PKCS#11 URI {what}"));
        let rest = uri.trim().strip_prefix("pkcs11:").ok_or_else(|| bad("must start with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut module, mut pin_source) = (None, None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            match attr.split_once('=') {
                Some(("token", v)) => token = Some(percent_decode(v)?),
                Some(("object", v)) => object = Some(percent_decode(v)?),
                Some(("type" | "id" | "manufacturer" | "model" | "serial", _)) => {}
                _ => return Err(bad(&format!("has an attribute this server does not know ({attr})"))),
            }
        }
        for q in query.split('&').filter(|q| !q.is_empty()) {
            match q.split_once('=') {
                Some(("module-path", v)) => module = Some(PathBuf::from(percent_decode(v)?)),
                Some(("pin-source", v)) => {
                    let v = percent_decode(v)?;
                    let file = v.strip_prefix("file:").unwrap_or(&v).to_owned();
                    pin_source = Some(PathBuf::from(file));
                }
                Some(("pin-value", _)) => {
                    return Err(bad(
                        "must not carry the PIN (pin-value); use pin-source=file:… or $CHARTROOM_HSM_PIN",
                    ))
                }
                _ => return Err(bad(&format!("has a query attribute this server does not know ({q})"))),
            }
        }
        Ok(HsmKey {
            module: module.ok_or_else(|| bad("needs module-path=<the PKCS#11 library>"))?,
            token: token.ok_or_else(|| bad("needs token=<label>"))?,
            object: object.ok_or_else(|| bad("needs object=<key label>"))?,
            pin_source,
        })
    }

    /// The key's label on the token.
    pub fn label(&self) -> &str {
        &self.object
    }

    fn pin(&self) -> Result<AuthPin, ServerError> {
        let pin = match &self.pin_source {
            Some(path) => Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        hsm_error(format!("cannot read the PIN file {} ({})", path.display(), e.kind()))
                    })?
                    .trim()
                    .to_owned(),
            ),
            None => Zeroizing::new(std::env::var(PIN_ENV).map_err(|_| {
                hsm_error(format!("no PIN: give pin-source=file:… in the URI or set {PIN_ENV}"))
            })?),
        };
        Ok(AuthPin::from(pin.as_str()))
    }

    /// Runs `f` with a logged-in session on the key's token. The library is loaded and
    /// initialised once per process and HSM operations are serialised through it (a PKCS#11 library
    /// may be initialised only once; the checkpoint signer and an auditor's verification may ask at
    /// the same time). Every failure says the HSM is unavailable and why.
    fn with_session<T>(&self, f: impl FnOnce(&Session) -> Result<T, ServerError>) -> Result<T, ServerError> {
        let unavailable = |what: String| hsm_error(format!("the HSM is unavailable: {what}"));
        let mut contexts = CONTEXTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = match contexts.iter().position(|(module, _)| *module == self.module) {
            Some(i) => i,
            None => {
                if !self.module.exists() {
                    return Err(unavailable(format!("no PKCS#11 library at {}", self.module.display())));
                }
                let ctx = Pkcs11::new(&self.module)
                    .map_err(|e| unavailable(format!("cannot load the PKCS#11 library ({e})")))?;
                ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                    .map_err(|e| unavailable(format!("the PKCS#11 library did not start ({e})")))?;
                contexts.push((self.module.clone(), ctx));
                contexts.len() - 1
            }
        };
        let ctx = &contexts[index].1;
        let slots = ctx.get_slots_with_token().map_err(|e| unavailable(format!("no slots ({e})")))?;
        let slot = slots
            .into_iter()
            .find(|s| ctx.get_token_info(*s).is_ok_and(|t| t.label().trim() == self.token))
            .ok_or_else(|| unavailable(format!("no token labelled `{}`", self.token)))?;
        let session =
            ctx.open_rw_session(slot).map_err(|e| unavailable(format!("cannot open a session ({e})")))?;
        match session.login(UserType::User, Some(&self.pin()?)) {
            // The login is the application's, not the session's: an earlier session made it.
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(unavailable(format!("the token refused the PIN ({e})"))),
        }
        f(&session)
    }

    fn find(&self, session: &Session, class: ObjectClass) -> Result<Option<ObjectHandle>, ServerError> {
        let found = session
            .find_objects(&[Attribute::Class(class), Attribute::Label(self.object.as_bytes().to_vec())])
            .map_err(hsm_error)?;
        Ok(found.into_iter().next())
    }

    /// Makes the AES-256 wrapping key on the token if it is not there yet (sensitive, never
    /// extractable).
    pub fn ensure_wrapping_key(&self) -> Result<(), ServerError> {
        self.with_session(|session| {
            if self.find(session, ObjectClass::SECRET_KEY)?.is_none() {
                session
                    .generate_key(
                        &Mechanism::AesKeyGen,
                        &[
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Encrypt(true),
                            Attribute::Decrypt(true),
                            Attribute::ValueLen(32u64.into()),
                            Attribute::Label(self.object.as_bytes().to_vec()),
                        ],
                    )
                    .map_err(hsm_error)?;
            }
            Ok(())
        })
    }

    /// Seals `secret` with the wrapping key, inside the HSM (AES-GCM; random IV first).
    pub fn seal(&self, secret: &[u8], purpose: &str) -> Result<Vec<u8>, ServerError> {
        let sealed = self.with_session(|session| {
            let key = self.find(session, ObjectClass::SECRET_KEY)?.ok_or_else(|| self.missing())?;
            let mut iv = [0u8; GCM_IV];
            session.generate_random_slice(&mut iv).map_err(hsm_error)?;
            let mut iv_param = iv;
            let params =
                GcmParams::new(&mut iv_param, purpose.as_bytes(), 128u64.into()).map_err(hsm_error)?;
            let sealed = session.encrypt(&Mechanism::AesGcm(params), key, secret).map_err(hsm_error)?;
            Ok([&iv[..], &sealed].concat())
        })?;
        record_use(&self.object, &format!("seal {purpose}"));
        Ok(sealed)
    }

    /// Opens what [`HsmKey::seal`] sealed for the same purpose, inside the HSM.
    pub fn open(&self, sealed: &[u8], purpose: &str) -> Result<Zeroizing<Vec<u8>>, ServerError> {
        if sealed.len() < GCM_IV + 16 {
            return Err(ServerError::Damaged("keys/master.wrapped"));
        }
        let plain = self.with_session(|session| {
            let key = self.find(session, ObjectClass::SECRET_KEY)?.ok_or_else(|| self.missing())?;
            let mut iv = [0u8; GCM_IV];
            iv.copy_from_slice(&sealed[..GCM_IV]);
            let params = GcmParams::new(&mut iv, purpose.as_bytes(), 128u64.into()).map_err(hsm_error)?;
            session.decrypt(&Mechanism::AesGcm(params), key, &sealed[GCM_IV..]).map_err(|_| {
                hsm_error(format!("the HSM key `{}` does not open this wrapped {purpose}", self.object))
            })
        })?;
        record_use(&self.object, &format!("open {purpose}"));
        Ok(Zeroizing::new(plain))
    }

    /// Makes the Ed25519 signing key pair on the token if it is not there yet; its public key.
    pub fn ensure_signing_key(&self) -> Result<ed25519_dalek::VerifyingKey, ServerError> {
        self.with_session(|session| {
            if self.find(session, ObjectClass::PRIVATE_KEY)?.is_none() {
                let label = Attribute::Label(self.object.as_bytes().to_vec());
                session
                    .generate_key_pair(
                        &Mechanism::EccEdwardsKeyPairGen,
                        &[
                            Attribute::Token(true),
                            Attribute::Verify(true),
                            Attribute::EcParams(ED25519_OID.to_vec()),
                            label.clone(),
                        ],
                        &[
                            Attribute::Token(true),
                            Attribute::Private(true),
                            Attribute::Sensitive(true),
                            Attribute::Extractable(false),
                            Attribute::Sign(true),
                            label,
                        ],
                    )
                    .map_err(hsm_error)?;
            }
            self.public_key(session)
        })
    }

    fn public_key(&self, session: &Session) -> Result<ed25519_dalek::VerifyingKey, ServerError> {
        let public = self.find(session, ObjectClass::PUBLIC_KEY)?.ok_or_else(|| self.missing())?;
        let attrs = session.get_attributes(public, &[AttributeType::EcPoint]).map_err(hsm_error)?;
        let Some(Attribute::EcPoint(point)) = attrs.into_iter().next() else {
            return Err(hsm_error("the HSM did not give the signing key's public point"));
        };
        // DER OCTET STRING (04 20 <32 bytes>) or the raw 32 bytes.
        let raw = match point.as_slice() {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
            raw if raw.len() == 32 => raw,
            _ => return Err(hsm_error("the HSM's Ed25519 public key has an unexpected form")),
        };
        let bytes: [u8; 32] = raw.try_into().map_err(|_| hsm_error("bad public key"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| hsm_error("the HSM's public key is not valid"))
    }

    /// The signing key pair's public key (the key must exist).
    pub fn verifying_key(&self) -> Result<ed25519_dalek::VerifyingKey, ServerError> {
        self.with_session(|session| self.public_key(session))
    }

    /// Signs `message` with the Ed25519 key, inside the HSM. The caller records the use in the
    /// trail first (see `audit::CheckpointKey`), so that the checkpoint it signs covers it.
    pub fn sign(&self, message: &[u8]) -> Result<ed25519_dalek::Signature, ServerError> {
        let signature = self.with_session(|session| {
            let key = self.find(session, ObjectClass::PRIVATE_KEY)?.ok_or_else(|| self.missing())?;
            session
                .sign(&Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)), key, message)
                .map_err(hsm_error)
        })?;
        let bytes: [u8; 64] = signature
            .as_slice()
            .try_into()
            .map_err(|_| hsm_error("the HSM's signature has an unexpected length"))?;
        Ok(ed25519_dalek::Signature::from_bytes(&bytes))
    }

    fn missing(&self) -> ServerError {
        hsm_error(format!("the HSM is unavailable: no key `{}` on token `{}`", self.object, self.token))
    }
}

fn percent_decode(s: &str) -> Result<String, ServerError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or_else(|| hsm_error("the PKCS#11 URI has a bad %-escape"))?;
            out.push(
                u8::from_str_radix(hex, 16).map_err(|_| hsm_error("the PKCS#11 URI has a bad %-escape"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| hsm_error("the PKCS#11 URI is not UTF-8"))
}

/// One initialised PKCS#11 context per library, for the whole process.
static CONTEXTS: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

/// HSM key uses not yet in the audit trail (the master key is opened before the database is).
static USES: Mutex<Vec<Event>> = Mutex::new(Vec::new());

/// The audit event of one use of an HSM key.
pub fn use_event(object: &str, what: &str) -> Event {
    let mut e = Event::new(crate::wall_now(), "key_access", "hsm_key", "ok");
    e.resource_id = Some(format!("{object}: {what}"));
    e.username = Some("server".into());
    e
}

fn record_use(object: &str, what: &str) {
    USES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(use_event(object, what));
}

/// The HSM key uses since the last call, for the audit trail.
pub fn take_uses() -> Vec<Event> {
    std::mem::take(&mut *USES.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_module_token_object_and_never_carry_the_pin() {
        let k = HsmKey::parse(
            "pkcs11:token=chart%20room;object=master?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/pin",
        )
        .unwrap();
        assert_eq!((k.token.as_str(), k.label()), ("chart room", "master"));
        assert_eq!(k.pin_source.as_deref(), Some(std::path::Path::new("/etc/pin")));
        for bad in [
            "token=x;object=y?module-path=/m",
            "pkcs11:object=y?module-path=/m",
            "pkcs11:token=x?module-path=/m",
            "pkcs11:token=x;object=y",
            "pkcs11:token=x;object=y?module-path=/m&pin-value=1234",
            "pkcs11:token=x;object=y;colour=red?module-path=/m",
        ] {
            let e = HsmKey::parse(bad).unwrap_err();
            assert!(e.to_string().contains("PKCS#11 URI"), "{bad}: {e}");
        }
    }
}
