// The conversion page: no framework, no build step, no third-party requests.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("convert-form");
  const urls = $("urls");
  const files = $("files");
  const drop = $("drop");
  const chosen = $("chosen");
  const chosenList = $("chosen-list");
  const pageSize = $("page-size");
  const convert = $("convert");
  const progress = $("progress");
  const bar = $("progress-bar");
  const status = $("status");
  const error = $("error");
  const result = $("result");
  const previews = $("previews");
  const download = $("download");

  // Defaults match the service's; /limits replaces them with the real ones.
  let limits = { max_pages: 20, max_upload_bytes: 50 * 1048576, max_source_bytes: 20 * 1048576 };
  let objectUrls = [];

  const mib = (n) => {
    if (n < 1048576) return Math.max(1, Math.round(n / 1024)) + " KB";
    const v = n / 1048576;
    return (v >= 10 ? Math.round(v) : Math.round(v * 10) / 10) + " MB";
  };
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many);

  fetch("/limits").then((r) => (r.ok ? r.json() : null)).then((l) => {
    if (l) limits = l;
    $("limits").textContent =
      "Up to " + plural(limits.max_pages, "image", "images") + " at a time, at most " +
      mib(limits.max_source_bytes) + " each and " + mib(limits.max_upload_bytes) +
      " for all files together.";
  }).catch(() => {});

  function urlList() {
    return urls.value.split(/\s*\n\s*/).map((s) => s.trim()).filter(Boolean);
  }

  function showFiles() {
    chosenList.textContent = "";
    for (const f of files.files) {
      const li = document.createElement("li");
      li.textContent = f.name + " (" + mib(f.size) + ")";
      chosenList.appendChild(li);
    }
    chosen.hidden = files.files.length === 0;
  }

  files.addEventListener("change", showFiles);
  $("clear-files").addEventListener("click", () => {
    files.value = "";
    showFiles();
    files.focus();
  });

  ["dragenter", "dragover"].forEach((type) =>
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    drop.addEventListener(type, () => drop.classList.remove("over"))
  );
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) {
      files.files = e.dataTransfer.files;
      showFiles();
    }
  });

  // Ctrl+Enter (or Cmd+Enter) in the address box converts, as a shortcut.
  urls.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  function setBusy(busy, text) {
    convert.disabled = busy;
    form.setAttribute("aria-busy", busy ? "true" : "false");
    progress.hidden = !busy;
    if (busy) bar.removeAttribute("value");
    status.textContent = text || "";
  }

  function showError(message) {
    setBusy(false, "");
    error.textContent = message;
    error.hidden = false;
  }

  function clearOutcome() {
    error.hidden = true;
    error.textContent = "";
    result.hidden = true;
    previews.textContent = "";
    objectUrls.forEach((u) => URL.revokeObjectURL(u));
    objectUrls = [];
  }

  // Plain words for failures that carry no usable detail.
  function messageFor(statusCode, body) {
    if (body && typeof body.detail === "string" && body.detail) {
      let text = body.detail;
      if (statusCode === 503) text += " Please try again in a moment.";
      return text;
    }
    if (statusCode === 413) return "That is too large for this service.";
    if (statusCode === 503) return "The service is busy. Please try again in a moment.";
    if (statusCode >= 500) return "Something went wrong on our side. Please try again.";
    return "The conversion failed (error " + statusCode + ").";
  }

  function showResult(converted, items) {
    setBusy(false, "Done: your PDF has " + plural(items.length, "page", "pages") + ".");
    $("result-summary").textContent = items.length === 1
      ? "1 page."
      : items.length + " pages, in the order you gave.";
    items.forEach((item, i) => {
      const li = document.createElement("li");
      const img = document.createElement("img");
      img.alt = "Page " + (i + 1) + ": " + item.name;
      img.loading = "lazy";
      img.referrerPolicy = "no-referrer";
      img.addEventListener("error", () => img.replaceWith(document.createTextNode("No preview")));
      img.src = item.src;
      li.appendChild(img);
      li.appendChild(document.createTextNode("Page " + (i + 1)));
      previews.appendChild(li);
    });
    download.href = converted;
    download.textContent = "Download PDF (" + plural(items.length, "page", "pages") + ")";
    result.hidden = false;
    $("result-title").focus();
  }

  function sendJson(list) {
    const body = list.length === 1 ? { source_url: list[0] } : { source_urls: list };
    if (pageSize.value !== "image") body.page_size = pageSize.value;
    setBusy(true, "Converting " + plural(list.length, "image", "images") + "…");
    return fetch("/image_to_pdf", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    }).then((r) =>
      r.json().catch(() => null).then((data) => ({ status: r.status, data }))
    );
  }

  function sendFiles(list) {
    const data = new FormData();
    list.forEach((f) => data.append("files", f, f.name));
    if (pageSize.value !== "image") data.append("page_size", pageSize.value);
    setBusy(true, "Uploading " + plural(list.length, "file", "files") + "…");
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/image_to_pdf/upload");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        bar.max = e.total;
        bar.value = e.loaded;
        if (e.loaded >= e.total) {
          bar.removeAttribute("value");
          status.textContent = "Converting " + plural(list.length, "image", "images") + "…";
        } else {
          status.textContent = "Uploading: " + Math.floor((100 * e.loaded) / e.total) + "%";
        }
      });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        resolve({ status: xhr.status, data: body });
      });
      xhr.addEventListener("error", () => reject(new Error("network")));
      xhr.send(data);
    });
  }

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (convert.disabled) return;
    clearOutcome();
    const list = urlList();
    const picked = Array.from(files.files);
    if (!list.length && !picked.length) {
      showError("Paste an image address or choose image files first.");
      urls.focus();
      return;
    }
    if (list.length && picked.length) {
      showError("Use either addresses or files, not both: clear one of them.");
      return;
    }
    const count = list.length || picked.length;
    if (count > limits.max_pages) {
      showError("Too many images: at most " + limits.max_pages + " at a time.");
      return;
    }
    if (picked.length) {
      const total = picked.reduce((n, f) => n + f.size, 0);
      if (total > limits.max_upload_bytes) {
        showError("These files are " + mib(total) + " together; the limit is " +
          mib(limits.max_upload_bytes) + ".");
        return;
      }
    }
    const items = list.length
      ? list.map((u) => ({ name: u, src: /^https?:\/\//i.test(u) ? u : "" }))
      : picked.map((f) => {
        const src = URL.createObjectURL(f);
        objectUrls.push(src);
        return { name: f.name, src };
      });
    (list.length ? sendJson(list) : sendFiles(picked))
      .then(({ status: code, data }) => {
        if (code === 200 && data && data.converted_url) showResult(data.converted_url, items);
        else showError(messageFor(code, data));
      })
      .catch(() => showError("Could not reach the service. Check your connection and try again."));
  });
})();
