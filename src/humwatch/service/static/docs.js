// The API page (/docs): Swagger UI (static/vendor/swagger-ui) reading /openapi.json. A file of its
// own, not an inline script, so the pages' Content-Security-Policy can say script-src 'self'.
(function () {
  "use strict";
  window.ui = SwaggerUIBundle({
    url: "/openapi.json", dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true,
    showExtensions: true, showCommonExtensions: true, validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
