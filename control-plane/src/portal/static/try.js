// "Try it": sends an operation's request from the visitor's browser to the
// gateway (never through the portal), with the visitor's API key in
// x-api-key. The gateway answers only if the stage's CORS allows the
// portal's origin. No inline script: the page loads this file.
"use strict";
(function () {
  var script = document.currentScript;
  var base = script ? script.getAttribute("data-base") : "";
  var forms = document.querySelectorAll("form.try");
  Array.prototype.forEach.call(forms, function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var answer = form.querySelector(".answer");
      var path = form.elements.path.value;
      if (path.charAt(0) !== "/") {
        path = "/" + path;
      }
      var init = { method: form.getAttribute("data-method"), headers: {} };
      var key = form.elements.key.value;
      if (key) {
        init.headers["x-api-key"] = key;
      }
      if (form.elements.body && form.elements.body.value) {
        init.body = form.elements.body.value;
        init.headers["content-type"] = "application/json";
      }
      answer.hidden = false;
      answer.textContent = "…";
      fetch(base + path, init)
        .then(function (response) {
          return response.text().then(function (text) {
            answer.textContent = response.status + " " + response.statusText + "\n\n" + text;
          });
        })
        .catch(function (error) {
          answer.textContent = "No answer: " + error + " (the stage's CORS must allow this portal's origin)";
        });
    });
  });
})();
