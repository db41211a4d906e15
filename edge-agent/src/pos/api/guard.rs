//! What every request must pass before its handler. The shop's Wi-Fi is shared with
//! customers, and any web page a staff member opens could make their browser talk to the box:
//!
//! - **Host**: the request must name this box: an IP address (DNS rebinding needs a name), its
//!   mDNS names, `localhost`, or a name in `pos.allowed_hosts`. A page whose name was rebound
//!   to the box's address sends its own name, and is refused.
//! - **Origin**: a write (anything but GET and HEAD) from a browser must come from a page of
//!   this box (`Origin`, and `Sec-Fetch-Site` where browsers send it). Clients that are not
//!   browsers send no Origin; they cannot be made to act for someone else.
//!
//! Bodies are bounded by the router's limit; JSON routes accept `application/json` only.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};

pub(super) async fn same_box_only(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !names_this_box(host, &state.host_names) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this box answers to its address or its own name, not {host:?} \
                 (add the name to pos.allowed_hosts if it is yours)"
            ),
        )
        .into_response();
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let headers = request.headers();
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        let foreign_origin = origin.is_some_and(|origin| {
            origin
                .split_once("://")
                .is_none_or(|(_, authority)| !names_this_box(authority, &state.host_names))
        });
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() == b"cross-site");
        if foreign_origin || cross_site {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "changes come from this box's own pages only (another site's page tried)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Whether `authority` (`host[:port]`) names this box: an IP address, `localhost`, or one of
/// `names` (lower case, no trailing dot).
pub(super) fn names_this_box(authority: &str, names: &[String]) -> bool {
    let host = match authority.strip_prefix('[') {
        // [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((v6, _)) => return v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => return false,
        },
        None => authority
            .rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(authority, |(host, _)| host),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    !host.is_empty()
        && (host.parse::<std::net::Ipv4Addr>().is_ok()
            || host == "localhost"
            || names.contains(&host))
}

#[cfg(test)]
mod tests {
    use super::names_this_box;

    #[test]
    fn addresses_and_own_names_pass_other_names_do_not() {
        let names = vec!["tastesync-seoul-1.local".to_string()];
        for ok in [
            "192.168.1.20:8080",
            "192.168.1.20",
            "[fe80::1]:8080",
            "localhost:8080",
            "TasteSync-Seoul-1.local.:8080",
        ] {
            assert!(names_this_box(ok, &names), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:8080",
            "192.168.1.20.evil.example",
            "tastesync-other.local",
            "",
            "[nonsense",
        ] {
            assert!(!names_this_box(refused, &names), "{refused}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_host_header_is_judged_without_panicking(text in "\\PC{0,80}") {
            let _ = names_this_box(&text, &["tastesync-x.local".to_string()]);
        }
    }
}
