//! The portal's pages as minijinja templates compiled into the binary;
//! every name ends in `.html`, so every value is HTML-escaped (API
//! descriptions, paths and summaries come from operators and imported
//! documents; emails from visitors).

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("catalog.html", include_str!("templates/catalog.html")),
    ("api.html", include_str!("templates/api.html")),
    ("form.html", include_str!("templates/form.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("message.html", include_str!("templates/message.html")),
    ("reference.html", include_str!("templates/reference.html")),
];

/// The stylesheet, served at `/static/portal.css`: the console's, then the
/// portal's own rules.
pub const STYLESHEET: &str = concat!(
    include_str!("../console/static/console.css"),
    include_str!("static/portal.css")
);
/// The "try it" script, served at `/static/try.js`.
pub const TRY_IT: &str = include_str!("static/try.js");
/// The script that starts Swagger UI on a reference page, served at
/// `/static/reference.js`.
pub const REFERENCE: &str = include_str!("static/reference.js");

/// The vendored Swagger UI's version (`vendor/swagger-ui/README.md`), in
/// its assets' paths so a browser never keeps a stale copy.
pub const SWAGGER_UI_VERSION: &str = "5.35.0";
/// Swagger UI's bundle (Apache-2.0, from `swagger-ui-dist`).
pub const SWAGGER_UI_JS: &str = include_str!("vendor/swagger-ui/swagger-ui-bundle.js");
/// Swagger UI's stylesheet.
pub const SWAGGER_UI_CSS: &str = include_str!("vendor/swagger-ui/swagger-ui.css");

pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, source) in TEMPLATES {
        if let Err(error) = env.add_template(name, source) {
            tracing::error!(%error, template = name, "portal template does not parse");
        }
    }
    env
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses() {
        let env = super::environment();
        for (name, _) in super::TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }
}
