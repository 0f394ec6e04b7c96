// Sends a dataset file with XMLHttpRequest so the page can show how much has been uploaded.
// Without JavaScript the form posts as usual (within the ordinary request size); with it, the
// server answers JSON (Accept header):
// {"redirect": url} once the version is imported, or {"errors": {field: [messages]}}.
(function () {
  "use strict";
  var form = document.querySelector("form[data-upload-progress]");
  if (!form || !window.FormData || !window.XMLHttpRequest) { return; }
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var button = form.querySelector("button[type=submit]");

  function say(text) { status.textContent = text; }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    // The server allows a dataset-sized body only once this token is checked, before the body.
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("input[name=csrf_token]").value);
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) { return; }
      var percent = Math.round((e.loaded / e.total) * 100);
      bar.value = percent;
      say(percent < 100 ? form.dataset.uploading.replace("{percent}", percent)
                        : form.dataset.counting);
    });
    xhr.addEventListener("load", function () {
      var answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (ignored) { answer = {}; }
      if (xhr.status === 200 && answer.redirect) {
        window.location.assign(answer.redirect);
        return;
      }
      var messages = [];
      Object.keys(answer.errors || {}).forEach(function (name) {
        messages = messages.concat(answer.errors[name]);
      });
      say(messages.join(" ") || form.dataset.failed);
      status.classList.add("error");
      button.disabled = false;
    });
    xhr.addEventListener("error", function () {
      say(form.dataset.failed);
      status.classList.add("error");
      button.disabled = false;
    });
    bar.hidden = false;
    bar.value = 0;
    status.classList.remove("error");
    button.disabled = true;
    xhr.send(new FormData(form));
  });
}());
