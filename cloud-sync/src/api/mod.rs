//! cloud-sync's HTTP API (axum): the provisioning routes boxes call to claim themselves
//! (`provisioning`), and HQ's console: its sign-in (`session`, `auth`), its JSON API (one
//! file per page: `shops`, `customers`, `analytics`, `feedback`, `privacy`, `audit`) and its
//! web app (`console`). HTTPS with rustls when given a certificate; every refusal a JSON
//! `{"error": "..."}` with a status that says why; the OpenAPI 3.1 document, generated from
//! the handlers, at `/api/v1/openapi.json`.

mod analytics;
mod audit;
pub mod auth;
mod console;
mod customers;
mod feedback;
mod privacy;
mod provisioning;
mod session;
mod shops;

use provisioning::BoxCredentialsScheme;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tastesync_shared::access::{MetricsRefusal, metrics_access};
use tastesync_shared::provisioning::ErrorBody;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::config::Config;
use crate::mqtt::dynsec::BrokerAdmin;

/// Shared by every request.
pub struct ApiState {
    pub config: Config,
    pub db: deadpool_postgres::Pool,
    /// Present when boxes get broker credentials of their own (`provisioning.credentials`).
    pub broker_admin: Option<BrokerAdmin>,
    /// The CA boxes should trust for the broker (PEM), read at start.
    pub box_broker_ca_pem: Option<String>,
    /// The keys that sign console access tokens.
    pub keys: auth::keys::SigningKeys,
    /// The external OpenID Connect provider, if configured.
    pub oidc: Option<auth::oidc::ExternalIssuer>,
    /// Password hashes computed at once (each takes ~20 MiB and a core for ~50 ms).
    pub hashing: tokio::sync::Semaphore,
}

type AppState = Arc<ApiState>;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/claims", post(provisioning::claim))
        .route(
            "/api/v1/boxes/{box_id}/standing",
            get(provisioning::standing),
        )
        .route("/api/v1/auth/login", post(session::login))
        .route("/api/v1/auth/refresh", post(session::refresh))
        .route("/api/v1/auth/logout", post(session::logout))
        .route("/api/v1/auth/me", get(session::me))
        .route("/api/v1/shops", get(shops::list).post(shops::add))
        .route(
            "/api/v1/shops/{shop_id}/claim-codes",
            post(shops::new_claim_code),
        )
        .route("/api/v1/boxes/{box_id}/revoke", post(shops::revoke_box))
        .route(
            "/api/v1/customers",
            get(customers::search).post(customers::enroll),
        )
        .route(
            "/api/v1/customers/{customer_ref}",
            get(customers::get)
                .put(customers::update)
                .delete(customers::delete),
        )
        .route(
            "/api/v1/customers/{customer_ref}/export",
            get(privacy::export),
        )
        .route(
            "/api/v1/customers/{customer_ref}/erasure",
            get(privacy::erasure).post(privacy::erase),
        )
        .route("/api/v1/erasures", get(privacy::erasures))
        .route("/api/v1/analytics", get(analytics::report))
        .route("/api/v1/feedback", get(feedback::page))
        .route("/api/v1/audit", get(audit::page))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(ApiDoc::openapi()) }),
        )
        .route("/.well-known/jwks.json", get(session::jwks))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API route") })
        .layer(axum::middleware::map_response(no_store))
        .layer(axum::middleware::from_fn(read_whole_body));
    api.merge(console::router()).with_state(state)
}

/// Prometheus' page (`crate::metrics`): for a client presenting `http.metrics_token`, or
/// without one configured, for loopback clients only (the shops' and HQ's networks never
/// see it unauthenticated).
async fn metrics(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = state.config.http.metrics_token.as_deref();
    metrics_access("http.metrics_token", token, authorization, peer.ip()).map_err(|refusal| {
        match refusal {
            MetricsRefusal::NoToken(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            MetricsRefusal::NotLocal(why) => ApiError::new(StatusCode::FORBIDDEN, why),
        }
    })?;
    let db = state.db.get().await?;
    let page = crate::metrics::render(&**db, state.config.kafka.enabled()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        page,
    )
        .into_response())
}

/// The largest request body the API reads (axum's own default for JSON).
const MAX_BODY: usize = 2 << 20;

/// Reads a request's whole body before it is routed. A request refused before its body is
/// read (no token, say) would otherwise leave the rest unread, and the server closes the
/// connection under a client still sending it: the client sees a broken connection instead
/// of the 401.
async fn read_whole_body(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Err(_) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a request body holds at most {MAX_BODY} bytes"),
        )
        .into_response(),
    }
}

/// API answers hold personal data and tokens: never cached.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Binds `http.listen` and serves until the process ends; HTTPS if a certificate is given.
pub async fn serve(state: ApiState) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let http = state.config.http.clone();
    let address: SocketAddr = http.listen.parse()?;
    let app = router(Arc::new(state)).into_make_service_with_connect_info::<SocketAddr>();
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("cannot listen on {address} for the API (http.listen)"))?;
    listener.set_nonblocking(true)?;
    let task = match (&http.tls_cert_file, &http.tls_key_file) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot load the API's certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            tracing::info!("API listening on https://{address}");
            tokio::spawn(async move {
                axum_server::from_tcp_rustls(listener, tls)?
                    .serve(app)
                    .await
                    .context("the API server failed")
            })
        }
        _ => {
            tracing::info!("API listening on http://{address} (loopback only)");
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .await
                    .context("the API server failed")
            })
        }
    };
    Ok(task)
}

#[derive(Serialize, ToSchema)]
struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/api/v1/health", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
    bearer_challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after_s: None,
            bearer_challenge: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// With `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after_s = Some(seconds);
        self
    }

    /// With `WWW-Authenticate: Bearer` (a 401 of the console's routes).
    pub fn with_bearer_challenge(mut self) -> ApiError {
        self.bearer_challenge = true;
        self
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> ApiError {
        tracing::error!("API request failed: {e:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error; see cloud-sync's log",
        )
    }
}

impl From<deadpool_postgres::PoolError> for ApiError {
    fn from(e: deadpool_postgres::PoolError) -> ApiError {
        tracing::error!("API cannot reach PostgreSQL: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database cannot be reached; try again shortly",
        )
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> ApiError {
        ApiError::from(anyhow::Error::from(e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        ApiError::bad_request(format!("invalid JSON body: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                seconds.to_string().parse().expect("digits"),
            );
        }
        if self.bearer_challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tastesync\""),
            );
        }
        response
    }
}

/// The OpenAPI document, served at `/api/v1/openapi.json`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "TasteSync cloud API",
        description = "Provisioning: a blank box claims itself for its shop with a claim code \
                       from HQ, and receives its broker credentials. The HQ console: sign in \
                       for an RS256 access token (15 minutes) and a rotating refresh token; \
                       shops and boxes, customers, analytics, feedback, privacy, audit log."
    ),
    paths(
        health,
        provisioning::claim,
        provisioning::standing,
        session::login,
        session::refresh,
        session::logout,
        session::me,
        session::jwks,
        shops::list,
        shops::add,
        shops::new_claim_code,
        shops::revoke_box,
        customers::search,
        customers::get,
        customers::enroll,
        customers::update,
        customers::delete,
        privacy::export,
        privacy::erase,
        privacy::erasure,
        privacy::erasures,
        analytics::report,
        feedback::page,
        audit::page,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BoxCredentialsScheme, &BearerScheme)
)]
pub struct ApiDoc;

/// The console's bearer tokens in the OpenAPI document.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(
            "an access token from /api/v1/auth/login (RS256, see /.well-known/jwks.json)".into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
