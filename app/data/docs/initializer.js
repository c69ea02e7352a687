// Starts Swagger UI on /docs over the service's own /openapi.json.
// A file of its own rather than an inline script, so the page also works under a
// Content-Security-Policy without 'unsafe-inline'; the page names the document's URL in
// data-spec-url, so nothing here depends on URL_PREFIX.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-spec-url"),
    domNode: root,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Swagger UI would otherwise send the document to validator.swagger.io for its badge:
    // no request leaves for another host (the document is validated in CI instead).
    validatorUrl: null,
  });
})();
