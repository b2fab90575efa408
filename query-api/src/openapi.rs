//! The OpenAPI 3.1 document (`/api/openapi.json`) and interactive docs (`/api/docs`).
//!
//! The document is built from the same catalog and dashboard library the API runs, so the
//! allowed metric, dimension and dashboard names it lists are exactly what the API accepts.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use serde_json::{Value, json};

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/openapi.json", get(document))
        .route("/api/docs", get(docs))
}

async fn docs() -> Html<&'static str> {
    // Swagger UI from a CDN: the browser fetches it, the service ships no assets.
    Html(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Marketing IQ API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#ui", persistAuthorization: true });</script>
</body></html>"##,
    )
}

fn error_responses() -> Value {
    let e = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } });
    json!({
        "400": e("Invalid request: the message names the field and the value"),
        "401": e("Missing, invalid or expired token"),
        "403": e("The token's role is too low"),
        "404": e("Not found (including another tenant's ids)"),
        "429": e("Tenant rate limit exceeded; see Retry-After"),
    })
}

fn param(name: &str, location: &str, description: &str, schema: Value, required: bool) -> Value {
    json!({ "name": name, "in": location, "description": description, "schema": schema, "required": required })
}

async fn document(State(state): State<AppState>) -> Json<Value> {
    let metrics: Vec<&String> = state.catalog.metrics.keys().collect();
    let dimensions: Vec<&String> = state.catalog.dimensions.keys().collect();
    let dashboards: Vec<&String> = state.dashboards.dashboards.keys().collect();
    let segments: Vec<&str> = crate::dashboards::SEGMENTS
        .iter()
        .map(|(s, _)| *s)
        .collect();
    let date = json!({ "type": "string", "format": "date" });
    let range = [
        param(
            "start_date",
            "query",
            "First day (default: 30 days before end_date)",
            date.clone(),
            false,
        ),
        param(
            "end_date",
            "query",
            "Last day (default: yesterday)",
            date.clone(),
            false,
        ),
    ];
    let ok =
        |d: &str| json!({ "200": { "description": d, "content": { "application/json": {} } } });
    let with_errors = |mut responses: Value| {
        if let (Some(r), Some(e)) = (responses.as_object_mut(), error_responses().as_object()) {
            r.extend(e.clone());
        }
        responses
    };
    let secured = json!([{ "bearer": [] }]);
    Json(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Marketing IQ API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Multi-tenant marketing analytics. Every request is scoped to the tenant of its bearer token. Money is in account currency (see metadata.currencies); ratios are computed from sums.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" } } } }
                },
                "Metric": { "type": "string", "enum": metrics },
                "Dimension": { "type": "string", "enum": dimensions },
                "Filter": {
                    "type": "object", "required": ["dimension", "op", "value"],
                    "properties": {
                        "dimension": { "$ref": "#/components/schemas/Dimension" },
                        "op": { "type": "string", "enum": ["eq", "neq", "in", "not_in", "contains", "starts_with", "gt", "gte", "lt", "lte"] },
                        "value": { "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }] }
                    }
                },
                "Query": {
                    "type": "object", "required": ["metrics"],
                    "properties": {
                        "metrics": { "type": "array", "items": { "$ref": "#/components/schemas/Metric" } },
                        "dimensions": { "type": "array", "items": { "$ref": "#/components/schemas/Dimension" } },
                        "filters": { "type": "array", "items": { "$ref": "#/components/schemas/Filter" } },
                        "time": { "type": "object", "required": ["start", "end"], "properties": {
                            "start": date, "end": date, "grain": { "type": "string", "enum": ["day", "week", "month"] } } },
                        "having": { "type": "array", "items": { "type": "object", "properties": {
                            "metric": { "$ref": "#/components/schemas/Metric" }, "op": { "type": "string" }, "value": { "type": "number" } } } },
                        "order": { "type": "array", "items": { "type": "object", "properties": {
                            "field": { "type": "string" }, "direction": { "type": "string", "enum": ["asc", "desc"] } } } },
                        "limit": { "type": "integer", "minimum": 1, "maximum": state.settings.api.max_limit },
                        "offset": { "type": "integer", "minimum": 0 },
                        "compare": { "type": "string", "enum": ["previous_period"] },
                        "attributes": { "type": "string", "enum": ["as_of", "current"] }
                    }
                }
            }
        },
        "paths": {
            "/health": { "get": { "summary": "Liveness", "responses": ok("Serving") } },
            "/ready": { "get": { "summary": "Readiness: ClickHouse required, Redis optional (cache)", "responses": ok("Ready") } },
            "/metrics": { "get": { "summary": "Prometheus metrics", "responses": ok("Text exposition format") } },
            "/auth/refresh": { "post": { "summary": "Rotate a refresh token for a new access token; reusing a rotated token revokes its family",
                "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "refresh_token": { "type": "string" } } } } } },
                "responses": with_errors(ok("New access and refresh tokens")) } },
            "/auth/logout": { "post": { "summary": "Revoke a refresh token's family",
                "requestBody": { "content": { "application/json": { "schema": { "type": "object", "properties": { "refresh_token": { "type": "string" } } } } } },
                "responses": with_errors(json!({ "204": { "description": "Revoked" } })) } },
            "/api/v1/meta": { "get": { "summary": "Every metric and dimension, with description, type, unit and sources", "security": secured, "responses": with_errors(ok("The catalog")) } },
            "/api/v1/query": { "post": { "summary": "Unified metrics query", "security": secured,
                "parameters": [param("format", "query", "json (default) or csv (analyst and above)", json!({ "type": "string", "enum": ["json", "csv"] }), false)],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Query" } } } },
                "responses": with_errors(ok("Rows, totals, comparison, metadata (cached, query_time_ms)")) } },
            "/api/v1/metrics": { "get": { "summary": "Unified metrics query in a query string", "security": secured,
                "parameters": [
                    param("metrics[]", "query", "Metrics", json!({ "type": "array", "items": { "$ref": "#/components/schemas/Metric" } }), true),
                    param("dimensions[]", "query", "Dimensions", json!({ "type": "array", "items": { "$ref": "#/components/schemas/Dimension" } }), false),
                    range[0].clone(), range[1].clone(),
                    param("grain", "query", "day, week or month", json!({ "type": "string", "enum": ["day", "week", "month"] }), false),
                    param("filters", "query", "JSON: {\"dimension\": \"value\"} or a list of Filter", json!({ "type": "string" }), false),
                    param("order", "query", "field:asc|desc, comma-separated", json!({ "type": "string" }), false),
                    param("limit", "query", "Page size", json!({ "type": "integer" }), false),
                    param("offset", "query", "Page start", json!({ "type": "integer" }), false),
                    param("compare", "query", "previous_period", json!({ "type": "string" }), false),
                    param("format", "query", "json or csv", json!({ "type": "string" }), false),
                ],
                "responses": with_errors(ok("Same as POST /api/v1/query")) } },
            "/api/v1/dashboards": { "get": { "summary": "The 25 dashboards", "security": secured, "responses": with_errors(ok("Dashboards with their widgets")) } },
            "/api/v1/dashboards/{id}": { "get": { "summary": "Run a dashboard", "security": secured,
                "parameters": [
                    param("id", "path", "Dashboard", json!({ "type": "string", "enum": dashboards }), true),
                    range[0].clone(), range[1].clone(),
                    param("platforms[]", "query", "google_ads, meta_ads", json!({ "type": "array", "items": { "type": "string" } }), false),
                    param("campaigns[]", "query", "Campaign ids", json!({ "type": "array", "items": { "type": "string" } }), false),
                    param("target_cpa", "query", "goal-tracking target CPA", json!({ "type": "number" }), false),
                    param("target_roas", "query", "goal-tracking target ROAS", json!({ "type": "number" }), false),
                    param("format", "query", "json or csv (one widget: see widget)", json!({ "type": "string" }), false),
                    param("widget", "query", "Widget to export as CSV", json!({ "type": "string" }), false),
                ],
                "responses": with_errors(ok("summary, time_series, widgets, metadata")) } },
            "/api/v1/segments": { "get": { "summary": "The five segments", "security": secured, "responses": with_errors(ok("Segments")) } },
            "/api/v1/segments/{id}/dashboards": { "get": { "summary": "Dashboards of a segment", "security": secured,
                "parameters": [param("id", "path", "Segment", json!({ "type": "string", "enum": segments }), true)],
                "responses": with_errors(ok("Dashboards")) } },
            "/api/v1/campaigns": { "get": { "summary": "Campaigns with performance", "security": secured,
                "parameters": [range[0].clone(), range[1].clone(),
                    param("platforms[]", "query", "Platforms", json!({ "type": "array", "items": { "type": "string" } }), false),
                    param("status[]", "query", "Campaign statuses", json!({ "type": "array", "items": { "type": "string" } }), false),
                    param("search", "query", "Name contains (case-insensitive)", json!({ "type": "string" }), false),
                    param("order", "query", "metric or campaign/platform/campaign_status, :asc or :desc", json!({ "type": "string" }), false),
                    param("limit", "query", "Page size", json!({ "type": "integer" }), false),
                    param("offset", "query", "Page start", json!({ "type": "integer" }), false)],
                "responses": with_errors(ok("Campaigns")) } },
            "/api/v1/campaigns/{id}/performance": { "get": { "summary": "A campaign's versions, totals vs previous period and time series", "security": secured,
                "parameters": [param("id", "path", "Campaign id", json!({ "type": "string" }), true), range[0].clone(), range[1].clone(),
                    param("grain", "query", "day, week or month", json!({ "type": "string" }), false)],
                "responses": with_errors(ok("Campaign performance")) } },
            "/api/v1/platforms": { "get": { "summary": "Connected platforms and accounts", "security": secured, "responses": with_errors(ok("Platforms")) } },
        }
    }))
}
