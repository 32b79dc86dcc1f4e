// Starts the vendored Swagger UI on the API's public OpenAPI document (the
// URL is this script tag's data-spec). No inline script: the page loads
// this file. "Try it out" requests go from the visitor's browser to the
// gateway named in the document's servers, with the key given under
// "Authorize"; the gateway answers only if the stage's CORS allows the
// portal's origin.
"use strict";
(function () {
  var script = document.currentScript;
  var spec = script ? script.getAttribute("data-spec") : null;
  if (!spec || typeof window.SwaggerUIBundle !== "function") {
    return;
  }
  window.ui = window.SwaggerUIBundle({
    url: spec,
    dom_id: "#swagger-ui",
    deepLinking: false,
    // No badge image from validator.swagger.io, no spec URL from the query.
    validatorUrl: null,
    queryConfigEnabled: false,
    // The key stays in this page's memory only.
    persistAuthorization: false,
    withCredentials: false,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0
  });
})();
