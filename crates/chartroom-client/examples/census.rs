//! A minimal station over the network, for the demo and for trying a server by hand: enrolls with a
//! one-time token (pinning the certificate fingerprint), logs in with the password read from
//! standard input, and prints one page of a unit's census.
//!
//! `census --server https://127.0.0.1:8443 --fingerprint sha256:… --token crt1_… --username U --unit ICU`

#![forbid(unsafe_code)]

use chartroom_client::{DeviceIdentity, ServerClient};
use chartroom_protocol::CensusPage;

fn arg(args: &[String], name: &str) -> Result<String, String> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone()).ok_or(format!("missing {name}"))
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let (server, fingerprint, token) =
        (arg(&args, "--server")?, arg(&args, "--fingerprint")?, arg(&args, "--token")?);
    let (username, unit) = (arg(&args, "--username")?, arg(&args, "--unit")?);
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).map_err(|e| e.to_string())?;
    let password = password.trim_end_matches(['\n', '\r']);

    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let client = ServerClient::new(&server, &fingerprint).map_err(|e| e.to_string())?;
        // A throwaway device key: this example keeps nothing (a real station keeps it in the keyring).
        let seed: [u8; 32] = rand_seed();
        let probe = DeviceIdentity::new(String::new(), &seed);
        let enrolled = client.enroll(&token, &probe.public_key_hex()).await.map_err(|e| e.to_string())?;
        let device = DeviceIdentity::new(enrolled.device_id, &seed);
        let tokens = client.login(&device, &username, password).await.map_err(|e| e.to_string())?;
        let page: CensusPage = client
            .get(&device, &tokens.access_token, &format!("/v1/units/{unit}/census?limit=10"))
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "server census, unit {} (logged in as {} / {}, device {}):",
            page.unit,
            tokens.user.username,
            tokens.user.role.as_str(),
            enrolled.name
        );
        for p in &page.patients {
            println!(
                "  bed {:<5} {:<28} {} {}  allergies: {}",
                p.bed,
                p.name.to_string(),
                p.sex.letter(),
                p.birth_date,
                p.allergy_count
            );
        }
        if page.next_cursor.is_some() {
            println!("  … (more on the next page)");
        }
        Ok(())
    })
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    seed
}
