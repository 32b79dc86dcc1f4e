//! The console's pages as minijinja templates, compiled into the binary.
//! Every template name ends in `.html`, so every value is HTML-escaped
//! (API descriptions and route names are attacker-controlled in a shared
//! cluster); no template marks a value safe.

/// The templates, by name.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("apis.html", include_str!("templates/apis.html")),
    ("api.html", include_str!("templates/api.html")),
    ("resource_form.html", include_str!("templates/resource_form.html")),
    ("stage.html", include_str!("templates/stage.html")),
    ("rollback.html", include_str!("templates/rollback.html")),
    ("nodes.html", include_str!("templates/nodes.html")),
    ("keys.html", include_str!("templates/keys.html")),
    ("plans.html", include_str!("templates/plans.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("consumers.html", include_str!("templates/consumers.html")),
];

/// The stylesheet, served at `/static/console.css`.
pub const STYLESHEET: &str = include_str!("static/console.css");

pub fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
    for (name, source) in TEMPLATES {
        if let Err(error) = env.add_template(name, source) {
            // A template that does not parse is a build defect; the test
            // below renders every one.
            tracing::error!(%error, template = name, "console template does not parse");
        }
    }
    env
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_template_parses_and_escapes_what_it_is_given() {
        let env = super::environment();
        for (name, _) in super::TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
        let page = env
            .get_template("apis.html")
            .and_then(|t| {
                t.render(minijinja::context! {
                    user => minijinja::context! { name => "<b>x</b>", role => "operator", operator => true },
                    csrf => "c",
                    apis => vec![minijinja::context! { name => "a", description => "<script>alert(1)</script>" }],
                })
            })
            .expect("renders");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
            "{page}"
        );
        assert!(!page.contains("<b>x</b>"));
    }
}
