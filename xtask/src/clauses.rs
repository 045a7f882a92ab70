//! The HIPAA Security Rule's technical safeguards (45 CFR §164.312) and the Chartroom controls that
//! implement each one. Tests name the clauses they prove with `// hipaa (a)(1): …` annotations.

/// One clause of §164.312.
#[derive(Debug)]
pub struct Clause {
    /// As written in the rule, without the section number: `(a)(2)(iv)`.
    pub id: &'static str,
    pub title: &'static str,
    /// The rule's requirement, paraphrased.
    pub requirement: &'static str,
    /// The controls in Chartroom that implement it, with where they live.
    pub controls: &'static [&'static str],
}

pub const CLAUSES: &[Clause] = &[
    Clause {
        id: "(a)(1)",
        title: "Access control",
        requirement: "Allow access to ePHI only to persons or software programs that have been granted access rights.",
        controls: &[
            "One role-based, minimum-necessary policy engine (`chartroom-domain/src/access.rs`) used by the server (the authority) and the station (what it shows). Roles `nurse`, `physician`, `billing`, `auditor`, `admin`; permissions scoped to units.",
            "Every patient id, draft id and change id in a request is checked against the caller's scope (no IDOR); every denial is an audit entry.",
            "Stations are enrolled devices; a station restricted to a ward serves only that ward; a revoked device loses access at once and wipes itself.",
            "Machine policy (`/etc/chartroom/policy.toml`) limits which roles may log in at a station.",
        ],
    },
    Clause {
        id: "(a)(2)(i)",
        title: "Unique user identification",
        requirement: "Assign a unique name and/or number for identifying and tracking user identity.",
        controls: &[
            "Usernames are unique; there are no shared or generic accounts (`chartroom-server/src/users.rs`).",
            "Each user has their own key slot on a station; a session belongs to one user, and switching user ends the locked session.",
            "Every audit entry names one user and one device.",
        ],
    },
    Clause {
        id: "(a)(2)(ii)",
        title: "Emergency access procedure",
        requirement: "Establish procedures for obtaining necessary ePHI during an emergency.",
        controls: &[
            "Break-glass: a clinician opens one patient outside their scope after giving a reason; access lasts one hour, is audited as `break_glass` and is queued for auditor review (`chartroom-server/src/records.rs`, `chartroom-station/src/vault.rs`).",
            "Break-glass works offline on a station for patients it holds, and is reviewed once the trail syncs.",
        ],
    },
    Clause {
        id: "(a)(2)(iii)",
        title: "Automatic logoff",
        requirement: "Terminate an electronic session after a predetermined time of inactivity.",
        controls: &[
            "The backend owns the idle timer (`chartroom-domain/src/session.rs`): a warning with a countdown, then a lock that shows no PHI; an absolute session limit; a suspended laptop wakes locked.",
            "Timeouts come from the device profile and the machine policy (station idle at most 15 minutes).",
            "OS screen lock and suspend lock the app; access tokens live at most 10 minutes.",
        ],
    },
    Clause {
        id: "(a)(2)(iv)",
        title: "Encryption and decryption",
        requirement: "Implement a mechanism to encrypt and decrypt ePHI.",
        controls: &[
            "Station cache in SQLCipher under a random data key, wrapped per user by an Argon2id-derived key and by a device secret in the OS keyring (`chartroom-store`, `chartroom-crypto`).",
            "PHI fields sealed per patient with AES-256-GCM on the server (both backends), under a master key kept outside the database (file, OS keyring or HSM); MRN lookups through keyed blind indexes.",
            "Backups sealed in authenticated chunks; master key and station data key rotation; key material zeroized on drop.",
        ],
    },
    Clause {
        id: "(b)",
        title: "Audit controls",
        requirement: "Implement mechanisms that record and examine activity in systems that contain or use ePHI.",
        controls: &[
            "Every read and write of patient data, login, lock, denial, break-glass, export and key use is an audit entry (who, what, when, where, before/after sealed) in a per-device SHA-256 hash chain (`chartroom-audit`).",
            "The server verifies chain continuity on upload, keeps its own chain and writes Ed25519-signed checkpoints; `audit verify` detects edits, deletions and truncation.",
            "Auditors search, verify and export the trail and review break-glass; an access burst disables the account and raises an incident; retention of six years is enforced by purge.",
        ],
    },
    Clause {
        id: "(c)(1)",
        title: "Integrity",
        requirement: "Protect ePHI from improper alteration or destruction.",
        controls: &[
            "Records carry server versions; a change applies only on its base version, otherwise it is a conflict the clinician resolves (no silent last-writer-wins). Pushes are idempotent.",
            "Signed notes are never edited or deleted: addenda amend them and only their author marks them entered-in-error.",
            "Local edits, their outbox entry and their audit entries commit in one SQLCipher transaction; killed processes and cut connections lose and duplicate nothing.",
        ],
    },
    Clause {
        id: "(c)(2)",
        title: "Mechanism to authenticate ePHI",
        requirement: "Corroborate that ePHI has not been altered or destroyed in an unauthorized manner.",
        controls: &[
            "AEAD (AES-256-GCM) on every sealed field, bound to its patient, record and field, so a moved, relabelled or flipped value fails to open.",
            "SQLCipher page HMACs on the station cache and the embedded server database; damaged files are reported and left alone.",
            "Key slots and backups are authenticated; swapped slots, reordered or truncated backup chunks are refused.",
        ],
    },
    Clause {
        id: "(d)",
        title: "Person or entity authentication",
        requirement: "Verify that a person or entity seeking access to ePHI is the one claimed.",
        controls: &[
            "Users: a password (policy-checked, Argon2id at or above the OWASP floor) checked by the server online and by the user's key slot offline; failed attempts are throttled and locked out, on both.",
            "Devices: enrolled with a single-use token; each request is signed by the device's Ed25519 key; login challenges are single-use nonces; tokens work only from the device they were issued to.",
        ],
    },
    Clause {
        id: "(e)(1)",
        title: "Transmission security",
        requirement: "Guard against unauthorized access to ePHI transmitted over a network.",
        controls: &[
            "HTTPS with TLS 1.3 only (rustls); the station pins the server certificate by fingerprint from enrollment or machine policy; short-lived access tokens and device-bound refresh tokens.",
            "Server to PostgreSQL over TLS with a verified certificate, or a local Unix socket.",
        ],
    },
    Clause {
        id: "(e)(2)(i)",
        title: "Integrity controls",
        requirement: "Ensure that transmitted ePHI is not improperly modified without detection until disposed of.",
        controls: &[
            "TLS 1.3 AEAD records; signed requests; audit chains verified on upload; change ids make retries idempotent.",
            "Updates and releases are minisign-signed and verified before use.",
        ],
    },
    Clause {
        id: "(e)(2)(ii)",
        title: "Encryption",
        requirement: "Encrypt ePHI whenever deemed appropriate.",
        controls: &[
            "All traffic is TLS 1.3; PHI fields additionally travel sealed per patient (AEAD inside TLS) and patient keys are wrapped to the receiving device.",
            "Backups leave the server sealed; PostgreSQL holds sealed columns only.",
        ],
    },
];

/// The clause with this id, if it is one.
pub fn find(id: &str) -> Option<&'static Clause> {
    CLAUSES.iter().find(|c| c.id == id)
}
