//! Small builders shared by the end-to-end tests.

use pylon_proto::config::v1::{Api, Integration, MockResponse, Route, integration};

/// An API with one MOCK route whose body is `body`.
pub fn mock_api(name: &str, body: &str) -> Api {
    Api {
        name: name.into(),
        routes: vec![Route {
            method: "GET".into(),
            path: "/items".into(),
            integration: Some(Integration {
                r#type: integration::Type::Mock as i32,
                mock: Some(MockResponse {
                    status_code: 200,
                    body: body.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn mock_body(api: &Api) -> Option<&str> {
    api.routes
        .first()?
        .integration
        .as_ref()?
        .mock
        .as_ref()
        .map(|m| m.body.as_str())
}
