// The API reference: Swagger UI (served by Cascade from web/node_modules) over /api/openapi.json.
// "Try it out" sends requests from this page, with the session cookie of whoever is logged in.
'use strict';
window.addEventListener('DOMContentLoaded', () => {
  window.SwaggerUIBundle({
    url: '/api/openapi.json',
    dom_id: '#api',
    deepLinking: true,
    tryItOutEnabled: false,
    withCredentials: true,
    // No badge from validator.swagger.io: nothing on this page leaves the server.
    validatorUrl: null,
  });
});
