//! The console's customers: search, enroll (static tags and/or a new EID tag), edit, move
//! between shops, delete. Every change reaches the boxes of the shops concerned through the
//! downlink, and is audited with the change in one transaction.
//!
//! Admins act on every customer. A manager sees customers of their shops and changes them
//! within those shops: shops outside their scope stay as they are, and a customer who also
//! belongs elsewhere is deleted by an admin. Analysts never see a customer.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tastesync_shared::eid::MAX_EXPONENT;
use tastesync_shared::hexfmt::hex;
use tastesync_shared::provisioning::ErrorBody;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, forbidden};
use super::{ApiError, AppState};
use crate::mqtt::downlink;
use crate::storage::customers::{
    self, Customer, Listed, Refused, canonical_tags, new_identity_key,
};

/// A customer as the console shows them (never the identity key).
#[derive(Serialize, ToSchema)]
pub struct CustomerView {
    pub customer_ref: String,
    pub display_name: String,
    pub tier: String,
    /// What staff must know, such as allergies.
    pub notes: String,
    pub preferences: String,
    pub tag_ids: Vec<String>,
    pub shops: Vec<String>,
    /// The EID tag's rotation exponent, if they have one.
    pub eid_exponent: Option<u8>,
    /// Visits to the chain's shops, and the last one (Unix ms).
    pub visits: i64,
    pub last_visit_ms: Option<i64>,
}

impl From<Listed> for CustomerView {
    fn from(listed: Listed) -> CustomerView {
        let c = listed.customer;
        CustomerView {
            customer_ref: c.customer_ref,
            display_name: c.display_name,
            tier: c.tier,
            notes: c.notes,
            preferences: c.preferences,
            tag_ids: c.tag_ids,
            shops: c.shops,
            eid_exponent: c.eid_exponent,
            visits: listed.visits,
            last_visit_ms: listed.last_visit_ms,
        }
    }
}

/// A saved customer, and the new EID identity key to provision their tag with (shown once).
#[derive(Serialize, ToSchema)]
pub struct Saved {
    pub customer: CustomerView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eid_identity_key: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// A ref or name (from its start, any case), or a tag id.
    pub q: Option<String>,
    /// Only this shop's customers.
    pub shop: Option<String>,
    /// 1 to 200 (default 50).
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/customers", params(SearchParams), security(("bearer" = [])),
    responses(
    (status = 200, body = Vec<CustomerView>, description = "a page of customers, by ref"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<Vec<CustomerView>>, ApiError> {
    caller.require_people()?;
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = params.limit.unwrap_or(50);
    let offset = params.offset.unwrap_or(0);
    if !(1..=200).contains(&limit) || offset < 0 {
        return Err(ApiError::bad_request(
            "limit must be 1 to 200 and offset not negative",
        ));
    }
    if params.q.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::bad_request("q has at most 200 bytes"));
    }
    if let Some(shop) = &params.shop {
        caller.check_shop(shop)?;
    }
    let db = state.db.get().await?;
    let found = customers::search(
        &**db,
        params.q.as_deref(),
        params.shop.as_deref(),
        caller.shop_scope(),
        limit,
        offset,
    )
    .await?;
    Ok(Json(found.into_iter().map(CustomerView::from).collect()))
}

#[utoipa::path(get, path = "/api/v1/customers/{customer_ref}",
    params(("customer_ref" = String, Path)), security(("bearer" = [])), responses(
    (status = 200, body = CustomerView), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_ref): Path<String>,
) -> Result<Json<CustomerView>, ApiError> {
    caller.require_people()?;
    let db = state.db.get().await?;
    visible(&db, &caller, &customer_ref).await.map(Json)
}

/// The customer, if the caller may see them (404 otherwise: a manager does not learn who
/// is enrolled elsewhere).
async fn visible(
    db: &deadpool_postgres::Object,
    caller: &Caller,
    customer_ref: &str,
) -> Result<CustomerView, ApiError> {
    let listed = customers::find(&***db, customer_ref, caller.shop_scope())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no customer {customer_ref:?}")))?;
    Ok(listed.into())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// HQ's id for the customer: 1 to 64 printable characters.
    pub customer_ref: String,
    pub display_name: String,
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub preferences: String,
    /// The shops that should recognise them.
    pub shops: Vec<String>,
    /// Static beacon ids, e.g. `ibeacon:<uuid>:<major>:<minor>`.
    #[serde(default)]
    pub tag_ids: Vec<String>,
    /// Give them an EID tag: a new identity key, returned once.
    #[serde(default)]
    pub eid: bool,
    /// The EID rotation exponent (0 to 15, default 10).
    #[serde(default)]
    pub eid_exponent: Option<u8>,
}

#[utoipa::path(post, path = "/api/v1/customers", request_body = EnrollRequest,
    security(("bearer" = [])), responses(
    (status = 201, body = Saved, description = "enrolled; on its way to the shops' boxes"),
    (status = 400, body = ErrorBody, description = "invalid fields, tags or shops"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "the ref exists or was erased, or a tag is taken")))]
pub async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Saved>), ApiError> {
    caller.require_people()?;
    let Json(request) = body?;
    for shop in &request.shops {
        caller.check_shop(shop)?;
    }
    let exponent = request.eid_exponent.unwrap_or(10);
    if exponent > MAX_EXPONENT {
        return Err(ApiError::bad_request(format!(
            "eid_exponent must be 0 to {MAX_EXPONENT}"
        )));
    }
    let mut db = state.db.get().await?;
    known_shops(&db, &request.shops).await?;
    let customer = Customer {
        customer_ref: request.customer_ref,
        display_name: request.display_name,
        tier: request.tier,
        notes: request.notes,
        preferences: request.preferences,
        tag_ids: canonical_tags(&request.tag_ids).map_err(refusal)?,
        shops: request.shops,
        eid_exponent: request.eid.then_some(exponent),
        eid_identity_key: request.eid.then(new_identity_key),
    };
    let now = downlink::now_s();
    customers::enroll(
        &mut db,
        &customer,
        now,
        state.config.eid_days,
        &caller.actor(),
    )
    .await?
    .map_err(refusal)?;
    let saved = Saved {
        eid_identity_key: customer.eid_identity_key.map(|k| hex(&k)),
        customer: Listed {
            customer,
            visits: 0,
            last_visit_ms: None,
        }
        .into(),
    };
    Ok((StatusCode::CREATED, Json(saved)))
}

/// What to do with a customer's EID tag.
#[derive(Deserialize, ToSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EidChange {
    /// Leave it as it is.
    #[default]
    Keep,
    /// A new identity key (a lost phone or tag), returned once.
    New,
    /// No EID tag.
    Remove,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    pub display_name: String,
    #[serde(default)]
    pub tier: String,
    #[serde(default)]
    pub notes: String,
    #[serde(default)]
    pub preferences: String,
    /// The shops that should recognise them (a manager's change keeps the shops outside
    /// their scope as they are).
    pub shops: Vec<String>,
    #[serde(default)]
    pub tag_ids: Vec<String>,
    #[serde(default)]
    pub eid: EidChange,
}

#[utoipa::path(put, path = "/api/v1/customers/{customer_ref}",
    params(("customer_ref" = String, Path)), request_body = UpdateRequest,
    security(("bearer" = [])), responses(
    (status = 200, body = Saved, description = "saved; on its way to the shops' boxes"),
    (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
    (status = 409, body = ErrorBody, description = "a tag is taken")))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_ref): Path<String>,
    body: Result<Json<UpdateRequest>, JsonRejection>,
) -> Result<Json<Saved>, ApiError> {
    caller.require_people()?;
    let Json(request) = body?;
    for shop in &request.shops {
        caller.check_shop(shop)?;
    }
    let mut db = state.db.get().await?;
    known_shops(&db, &request.shops).await?;
    let tags = canonical_tags(&request.tag_ids).map_err(refusal)?;
    let new_key = (request.eid == EidChange::New).then(new_identity_key);
    let scope = caller.shop_scope().map(<[String]>::to_vec);
    let edit = |mut customer: Customer| {
        if let Some(scope) = &scope {
            if !customer.shops.iter().any(|s| scope.contains(s)) {
                return Err(Refused::NotFound(customer.customer_ref));
            }
            // Shops outside the manager's scope stay as they are.
            let mut shops: Vec<String> = customer
                .shops
                .iter()
                .filter(|s| !scope.contains(s))
                .cloned()
                .collect();
            shops.extend(request.shops.iter().cloned());
            customer.shops = shops;
        } else {
            customer.shops = request.shops.clone();
        }
        customer.shops.sort();
        customer.shops.dedup();
        customer.display_name = request.display_name.clone();
        customer.tier = request.tier.clone();
        customer.notes = request.notes.clone();
        customer.preferences = request.preferences.clone();
        customer.tag_ids = tags.clone();
        match request.eid {
            EidChange::Keep => {}
            EidChange::New => {
                customer.eid_exponent = customer.eid_exponent.or(Some(10));
                customer.eid_identity_key = new_key;
            }
            EidChange::Remove => {
                customer.eid_exponent = None;
                customer.eid_identity_key = None;
            }
        }
        Ok(customer)
    };
    let now = downlink::now_s();
    let customer = customers::update(
        &mut db,
        &customer_ref,
        edit,
        now,
        state.config.eid_days,
        &caller.actor(),
    )
    .await?
    .map_err(refusal)?;
    // As saved, even if the change took them out of the caller's shops.
    let listed = customers::find(&**db, &customer.customer_ref, None)
        .await?
        .unwrap_or(Listed {
            customer,
            visits: 0,
            last_visit_ms: None,
        });
    Ok(Json(Saved {
        customer: listed.into(),
        eid_identity_key: new_key.map(|k| hex(&k)),
    }))
}

#[utoipa::path(delete, path = "/api/v1/customers/{customer_ref}",
    params(("customer_ref" = String, Path)), security(("bearer" = [])), responses(
    (status = 204, description = "deleted at HQ; the shops' boxes delete them too"),
    (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(customer_ref): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_people()?;
    let scope = caller.shop_scope().map(<[String]>::to_vec);
    let allowed = |customer: &Customer| match &scope {
        None => Ok(()),
        Some(scope) if !customer.shops.iter().any(|s| scope.contains(s)) => {
            Err(Refused::NotFound(customer.customer_ref.clone()))
        }
        Some(scope) if customer.shops.iter().all(|s| scope.contains(s)) => Ok(()),
        Some(_) => Err(Refused::NotAllowed(
            "this customer also belongs to shops outside yours: take your shops off their \
             list instead, or ask an admin"
                .into(),
        )),
    };
    let mut db = state.db.get().await?;
    customers::delete(&mut db, &customer_ref, allowed, &caller.actor())
        .await?
        .map_err(refusal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// 400 unless every shop exists.
async fn known_shops(db: &deadpool_postgres::Object, shops: &[String]) -> Result<(), ApiError> {
    for shop in shops {
        if !crate::storage::shops::shop_exists(&***db, shop).await? {
            return Err(ApiError::bad_request(format!("no shop {shop:?}")));
        }
    }
    Ok(())
}

fn refusal(refused: Refused) -> ApiError {
    let status = match refused {
        Refused::Invalid(_) => StatusCode::BAD_REQUEST,
        Refused::NotFound(_) => StatusCode::NOT_FOUND,
        Refused::Exists(_) | Refused::TagTaken(_) | Refused::Erased(_) => StatusCode::CONFLICT,
        Refused::NotAllowed(message) => return forbidden(message),
    };
    ApiError::new(status, refused.to_string())
}
