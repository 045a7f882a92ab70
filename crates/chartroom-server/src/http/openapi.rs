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
    modifiers(&Security, &CommonErrors)
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

/// The answers any operation can give besides its own, declared on every operation they apply to,
/// so that a client (and the API scan, `scripts/api-scan`) finds every status in the document.
struct CommonErrors;

impl CommonErrors {
    fn error(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
        let content = utoipa::openapi::ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name("ApiError")))
            .build();
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build()
            .into()
    }
}

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let shared_parameters = item.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let methods = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
                &mut item.head,
                &mut item.options,
                &mut item.trace,
            ];
            for operation in methods.into_iter().flatten() {
                let has_body = operation.request_body.is_some();
                let has_parameters =
                    shared_parameters || operation.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let mut add = |status: &str, description: &str| {
                    operation
                        .responses
                        .responses
                        .entry(status.into())
                        .or_insert_with(|| Self::error(description));
                };
                if has_body || has_parameters {
                    add("400", "`request.malformed`, `request.invalid` or a more specific code");
                }
                if has_body {
                    add("413", "`request.too_large`: the body exceeds the request limit");
                    add(
                        "415",
                        "`request.content_type`: the body must be JSON (Content-Type: application/json)",
                    );
                }
                add("500", "`server.internal`: the server failed to handle the request");
                add("503", "`server.db`, `server.busy`, …: the server could not complete it now; try again");
                operation.responses.responses.entry("408".into()).or_insert_with(|| {
                    utoipa::openapi::ResponseBuilder::new()
                        .description("The request took longer than 30 s (no body)")
                        .build()
                        .into()
                });
            }
        }
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
