//! The OpenAPI 3.1 document, generated from the handlers' annotations and the wire types. It is
//! served at `/openapi.json` and checked in as `docs/openapi.json` (a test fails when they differ).

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Chartroom server API", description = "Stations enroll, log in, and read patient records over TLS 1.3."),
    paths(
        super::auth::health,
        super::auth::update_file,
        super::auth::enroll,
        super::auth::recover,
        super::auth::challenge,
        super::auth::login,
        super::auth::refresh,
        super::auth::logout,
        super::auth::me,
        super::records::census,
        super::records::chart,
        super::audit::upload,
        super::audit::search,
        super::audit::verify,
        super::records::lookup,
        super::records::break_glass,
        super::records::break_glass_uses,
        super::records::review_break_glass,
        super::records::incidents,
        super::records::push,
        super::records::pull,
    ),
    modifiers(&Security)
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .add_security_scheme("access_token", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        components.add_security_scheme(
            "device_proof",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                chartroom_protocol::PROOF_HEADER,
                "`t=<unix ms>,sig=<hex>`: Ed25519 signature by the device key over the request (see chartroom-protocol)",
            ))),
        );
    }
}

/// The document as pretty JSON (what `/openapi.json` serves and `docs/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.to_pretty_json().unwrap_or_default() + "\n"
}

pub async fn serve() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}
