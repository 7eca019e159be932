// Shows /v1/openapi.json. "Try it out" calls the API on this origin with the key or token typed
// into "Authorize"; nothing is fetched from elsewhere (no validator badge).
window.ui = SwaggerUIBundle({
  url: "/v1/openapi.json",
  dom_id: "#docs",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
