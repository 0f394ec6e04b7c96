// The file upload page: files or a folder (relative paths kept as manifest paths), each hashed
// in slices with hash-wasm (never the whole file in memory), sent in parts through the
// storefront's JSON routes with the session's CSRF token, three parts at a time, resumable: the upload id is kept in
// localStorage by dataset, path, size and lastModified, and on a second try only the parts
// the server lacks are sent. Then "Make a version" posts the completed uploads.
(function () {
  "use strict";
  var root = document.getElementById("file-upload");
  if (!root || !window.hashwasm) { return; }
  var PART = parseInt(root.dataset.partBytes, 10);
  var PARALLEL = 3;
  var csrf = document.getElementById("csrf").value;
  var bar = document.getElementById("files-progress");
  var status = document.getElementById("files-status");
  var list = document.getElementById("file-list");
  var button = document.getElementById("make-version");
  var completed = [];
  var UPLOADS = root.dataset.uploads;  // "/supplier/uploads/"

  function api(method, url, body, raw) {
    var headers = {"X-CSRFToken": csrf, "Accept": "application/json"};
    if (!raw) { headers["Content-Type"] = "application/json"; }
    else { headers["Content-Type"] = "application/octet-stream"; }
    return fetch(url, {method: method, headers: headers, credentials: "same-origin",
                       body: raw ? body : (body === undefined ? undefined : JSON.stringify(body))})
      .then(function (response) {
        return response.json().catch(function () { return {}; }).then(function (data) {
          if (!response.ok) {
            var messages = [];
            Object.keys(data.errors || {}).forEach(function (name) {
              messages.push(name + ": " + [].concat(data.errors[name]).join(" "));
            });
            var error = new Error(messages.join(" ") || data.detail || response.statusText);
            error.status = response.status;
            throw error;
          }
          return data;
        });
      });
  }

  function key(file, path) {
    return "upload:" + root.dataset.dataset + ":" + path + ":" + file.size + ":" + file.lastModified;
  }

  function sha256(file, show) {
    return hashwasm.createSHA256().then(function (hasher) {
      hasher.init();
      var offset = 0;
      function next() {
        if (offset >= file.size) { return hasher.digest("hex"); }
        var slice = file.slice(offset, offset + PART);
        return slice.arrayBuffer().then(function (buffer) {
          hasher.update(new Uint8Array(buffer));
          offset += buffer.byteLength;
          show(offset / file.size);
          return next();
        });
      }
      return next();
    });
  }

  function mediaType(file) { return file.type || "application/octet-stream"; }

  function uploadOne(file, row, sent) {
    var path = file.webkitRelativePath || file.name;
    var stored = localStorage.getItem(key(file, path));
    var parts = Math.max(1, Math.ceil(file.size / PART));
    var meter = row.querySelector("progress");
    var label = row.querySelector("span");
    function progress(done) { meter.value = done; sent.update(); }
    var begin = stored ? api("GET", UPLOADS + stored + "/parts").then(function (d) {
      if (d.upload.status === "completed") { return {upload: d.upload, have: null}; }
      if (d.upload.status !== "pending") { throw new Error("restart"); }
      return {upload: d.upload, have: d.parts};
    }).catch(function () { localStorage.removeItem(key(file, path)); return null; })
      : Promise.resolve(null);
    return begin.then(function (found) {
      if (found) { return found; }
      label.textContent = path + " — " + root.dataset.hashing;
      return sha256(file, function () {}).then(function (digest) {
        return api("POST", root.dataset.start, {path: path, media_type: mediaType(file),
                                             size: file.size, sha256: digest});
      }).then(function (upload) {
        localStorage.setItem(key(file, path), String(upload.id));
        return {upload: upload, have: []};
      });
    }).then(function (state) {
      var upload = state.upload;
      if (state.have === null) { progress(file.size); return upload; }
      var have = {};
      state.have.forEach(function (p) { have[p.number] = p.size; });
      var missing = [];
      var done = 0;
      for (var n = 1; n <= parts; n += 1) {
        var size = Math.min(PART, file.size - (n - 1) * PART);
        if (have[n] === size) { done += size; } else { missing.push(n); }
      }
      progress(done);
      label.textContent = path;
      function worker() {
        var n = missing.shift();
        if (n === undefined) { return Promise.resolve(); }
        var slice = file.slice((n - 1) * PART, n * PART);
        return api("PUT", UPLOADS + upload.id + "/parts/" + n, slice, true)
          .then(function () { done += slice.size; progress(done); return worker(); });
      }
      var workers = [];
      for (var w = 0; w < PARALLEL; w += 1) { workers.push(worker()); }
      return Promise.all(workers).then(function () {
        return api("POST", UPLOADS + upload.id + "/complete");
      });
    }).then(function (upload) {
      label.textContent = path + " — " +
        root.dataset.tokens.replace("{tokens}", upload.tokens.toLocaleString());
      row.dataset.state = "completed";
      return upload;
    });
  }

  function start(files) {
    list.textContent = "";
    completed = [];
    button.disabled = true;
    status.classList.remove("error");
    var total = 0;
    var rows = files.map(function (file) {
      total += file.size;
      var row = document.createElement("li");
      var label = document.createElement("span");
      label.textContent = file.webkitRelativePath || file.name;
      var meter = document.createElement("progress");
      meter.max = file.size;
      meter.value = 0;
      meter.setAttribute("aria-label", label.textContent);
      row.appendChild(label);
      row.appendChild(document.createTextNode(" "));
      row.appendChild(meter);
      list.appendChild(row);
      return row;
    });
    var sent = {update: function () {
      var done = 0;
      rows.forEach(function (row) { done += row.querySelector("progress").value; });
      bar.value = total ? Math.round(done * 100 / total) : 100;
    }};
    var chain = Promise.resolve();
    files.forEach(function (file, i) {
      chain = chain.then(function () { return uploadOne(file, rows[i], sent); })
        .then(function (upload) { completed.push(upload.id); });
    });
    chain.then(function () {
      status.textContent = root.dataset.done;
      button.disabled = false;
    }).catch(function (error) {
      status.textContent = root.dataset.failed + " " + (error.message || "");
      status.classList.add("error");
    });
  }

  ["pick-files", "pick-folder"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", function (event) {
      start(Array.prototype.slice.call(event.target.files));
    });
  });

  button.addEventListener("click", function () {
    button.disabled = true;
    api("POST", root.dataset.makeVersion, {upload_ids: completed,
                                         notes: document.getElementById("version-notes").value})
      .then(function (version) { window.location.assign("/versions/" + version.id); })
      .catch(function (error) {
        status.textContent = error.message;
        status.classList.add("error");
        button.disabled = false;
      });
  });
}());
