// searchkit page: text / image / combined search, results grid, viewer, "more like this".
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const state = { image: null, imageUrl: null, like: null };
  const FORMAT_NAMES = { JPEG: "jpeg", PNG: "png", WEBP: "webp", GIF: "gif", BMP: "bmp", TIFF: "tiff" };

  function basename(p) { return p.split(/[\\/]/).pop(); }

  // The lazy thumbnail of a hit or a duplicate-group member (by id only).
  function thumbnail(item) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = basename(item.path);
    img.src = item.thumb_url;
    return img;
  }

  function filterParams() {
    const p = new URLSearchParams();
    p.set("k", $("k").value);
    const after = $("after").value, before = $("before").value, folder = $("folder").value.trim();
    if (after) p.set("after", after);
    if (before) p.set("before", before);
    if (after || before) p.set("date_field", $("date-field").value);
    if (folder) p.set("folder", folder);
    const textContains = $("text-contains").value.trim();
    if (textContains) p.set("text_contains", textContains);
    document.querySelectorAll("#formats input:checked").forEach((c) => p.append("format", c.value));
    return p;
  }

  function negatives() {
    return $("not").value.split(",").map((s) => s.trim()).filter(Boolean);
  }

  function say(text, isError) {
    const m = $("message");
    m.textContent = text || "";
    m.classList.toggle("error", !!isError);
  }

  async function request(url, options) {
    const r = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) {
      if (r.status === 401) { location.href = "/login"; }
      throw new Error((body && body.detail) || ("request failed (" + r.status + ")"));
    }
    return body;
  }

  async function search() {
    const q = $("q").value.trim();
    const params = filterParams();
    let url, options, label;
    if (state.image) {
      const form = new FormData();
      form.append("image", state.image, state.image.name || "query-image");
      form.append("image_weight", $("image-weight").value);
      if (q) form.append("q", q);
      negatives().forEach((n) => form.append("not", n));
      url = "/api/search?" + params;
      options = { method: "POST", body: form };
      label = q ? "image + “" + q + "”" : "your image";
    } else if (q || state.like !== null) {
      if (q) params.set("q", q);
      if (state.like !== null) params.append("like", state.like.id);
      negatives().forEach((n) => params.append("not", n));
      url = "/api/search?" + params;
      label = state.like !== null ? "images like " + basename(state.like.path) : "“" + q + "”";
    } else {
      say("Type what you are looking for, or add an image.");
      return;
    }
    say("Searching…");
    document.body.classList.add("busy");
    try {
      const res = await request(url, options);
      render(res.hits);
      say(res.hits.length ? res.hits.length + " results for " + label + " (" +
        Math.round(res.timings.total_ms) + " ms)" : "No results for " + label + ".");
    } catch (e) {
      render([]);
      say(e.message, true);
    } finally {
      document.body.classList.remove("busy");
    }
  }

  function render(hits) {
    const list = $("results");
    list.replaceChildren();
    for (const h of hits) {
      const li = document.createElement("li");
      li.className = "card";
      li.dataset.id = h.key;
      const open = document.createElement("button");
      open.className = "open";
      open.type = "button";
      open.title = h.path;
      open.appendChild(thumbnail(h));
      open.addEventListener("click", () => view(h));
      const info = document.createElement("div");
      info.className = "info";
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = h.score.toFixed(3);
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = basename(h.path);
      const like = document.createElement("button");
      like.className = "link like";
      like.type = "button";
      like.textContent = "similar";
      like.title = "More like this";
      like.addEventListener("click", () => moreLike(h));
      info.append(score, name, like);
      if (h.duplicates > 0) info.insertBefore(copiesBadge(h.duplicates), like);
      li.append(open, info);
      list.appendChild(li);
    }
  }

  function row(table, key, value) {
    if (value === null || value === undefined || value === "") return;
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = key;
    const td = document.createElement("td");
    td.textContent = value;
    tr.append(th, td);
  }

  function view(h) {
    $("viewer-img").src = h.image_url;
    $("viewer-img").alt = basename(h.path);
    $("viewer-link").href = h.image_url;
    const t = $("viewer-meta");
    t.replaceChildren();
    row(t, "file", h.path);
    row(t, "score", h.score.toFixed(4));
    row(t, "size", h.width ? h.width + " × " + h.height : "");
    row(t, "format", h.format);
    row(t, "taken", h.taken_at ? h.taken_at.replace("T", " ") : "");
    row(t, "modified", h.modified_at.replace("T", " ").slice(0, 19));
    row(t, "camera", [h.camera_make, h.camera_model].filter(Boolean).join(" "));
    row(t, "id", h.key);
    $("viewer-like").onclick = () => { $("viewer").close(); moreLike(h); };
    if ($("viewer").showModal) $("viewer").showModal(); else $("viewer").setAttribute("open", "");
  }

  function moreLike(h) {
    clearImage();
    $("q").value = "";
    state.like = { id: h.key, path: h.path };
    search();
  }

  function setImage(file) {
    if (!file) return;
    if (file.type && !file.type.startsWith("image/")) { say("That is not an image.", true); return; }
    state.image = file;
    state.like = null;
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = URL.createObjectURL(file);
    $("query-img").src = state.imageUrl;
    $("drop-empty").hidden = true;
    $("drop-full").hidden = false;
    search();
  }

  function clearImage() {
    state.image = null;
    if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
    state.imageUrl = null;
    $("query-img").removeAttribute("src");
    $("drop-empty").hidden = false;
    $("drop-full").hidden = true;
    $("file").value = "";
  }

  async function loadStatus() {
    try {
      const st = await request("/api/status");
      $("status").textContent = st.indexed.toLocaleString() + " images · model " + st.model_name +
        (st.busy ? " · indexing…" : "");
      const roots = $("roots");
      roots.replaceChildren();
      for (const r of st.roots) { const o = document.createElement("option"); o.value = r; roots.appendChild(o); }
      const box = $("formats");
      box.querySelectorAll("label").forEach((l) => l.remove());
      for (const f of st.formats) {
        const v = FORMAT_NAMES[f] || (f === "MPO" ? null : null);
        if (!v) continue;
        const l = document.createElement("label");
        const c = document.createElement("input");
        c.type = "checkbox"; c.value = v;
        l.append(c, " " + v);
        box.appendChild(l);
      }
    } catch (e) {
      $("status").textContent = e.message;
    }
  }

  function wire() {
    $("search-form").addEventListener("submit", (e) => { e.preventDefault(); state.like = null; search(); });
    $("file").addEventListener("change", (e) => setImage(e.target.files[0]));
    $("clear-img").addEventListener("click", () => { clearImage(); if ($("q").value.trim()) search(); });
    $("image-weight").addEventListener("change", () => { if (state.image) search(); });
    const drop = $("drop");
    ["dragenter", "dragover"].forEach((t) => document.addEventListener(t, (e) => {
      e.preventDefault(); drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((t) => document.addEventListener(t, (e) => {
      e.preventDefault(); drop.classList.remove("over");
    }));
    document.addEventListener("drop", (e) => {
      const f = e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files[0];
      if (f) setImage(f);
    });
    document.addEventListener("paste", (e) => {
      const items = (e.clipboardData && e.clipboardData.items) || [];
      for (const it of items) {
        if (it.kind === "file" && it.type.startsWith("image/")) { e.preventDefault(); setImage(it.getAsFile()); return; }
      }
    });
    drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
    $("formats").addEventListener("change", () => search());
  }

  // ---- duplicates view (GET /api/dupes): groups of the same picture, the kept file first ----
  function copiesBadge(n) {
    const b = document.createElement("span");
    b.className = "copies";
    b.textContent = "×" + (n + 1);
    b.title = n + (n === 1 ? " other file has" : " other files have") + " the same content";
    return b;
  }

  function humanBytes(n) {
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function showView(name) {
    const dupes = name === "dupes";
    $("search-view").hidden = dupes;
    $("dupes-view").hidden = !dupes;
    $("tab-search").removeAttribute("aria-current");
    $("tab-dupes").removeAttribute("aria-current");
    $(dupes ? "tab-dupes" : "tab-search").setAttribute("aria-current", "page");
  }

  function dupesSay(text, isError) {
    const m = $("dupes-message");
    m.textContent = text || "";
    m.classList.toggle("error", !!isError);
  }

  async function findDupes() {
    const params = filterParams();
    params.delete("k");
    const t = $("dupes-threshold").value.trim();
    if (t) params.set("threshold", t);
    params.set("keep", $("dupes-keep").value);
    if ($("dupes-exact").checked) params.set("exact_only", "true");
    dupesSay("Looking for duplicates…");
    document.body.classList.add("busy");
    try {
      const res = await request("/api/dupes?" + params);
      renderGroups(res.groups);
      dupesSay(res.groups_total ? res.groups_total.toLocaleString() + " groups, " +
        res.redundant.toLocaleString() + " files could go (" + humanBytes(res.reclaimable_bytes) +
        ") among " + res.images.toLocaleString() + " images" +
        (res.groups.length < res.groups_total ? "; the largest " + res.groups.length + " shown" : "")
        : "No duplicates among " + res.images.toLocaleString() + " images.");
    } catch (e) {
      renderGroups([]);
      dupesSay(e.message, true);
    } finally {
      document.body.classList.remove("busy");
    }
  }

  const KINDS = { exact: "exact copies", near: "near-duplicates", mixed: "exact copies and near-duplicates" };

  function renderGroups(groups) {
    const list = $("groups");
    list.replaceChildren();
    for (const g of groups) {
      const li = document.createElement("li");
      li.className = "group";
      const head = document.createElement("p");
      head.className = "group-head";
      head.textContent = g.files + " files · " + KINDS[g.kind] + " · the others take " +
        humanBytes(g.reclaimable_bytes);
      const cards = document.createElement("ul");
      cards.className = "grid";
      for (const m of g.members) cards.appendChild(memberCard(m));
      li.append(head, cards);
      list.appendChild(li);
    }
  }

  function memberCard(m) {
    const li = document.createElement("li");
    li.className = "card" + (m.keep ? " keep" : "");
    li.dataset.id = m.key;
    const open = document.createElement("a");
    open.className = "open";
    open.href = m.image_url;
    open.target = "_blank";
    open.rel = "noopener";
    open.title = m.path;
    open.appendChild(thumbnail(m));
    const info = document.createElement("div");
    info.className = "info";
    const tag = document.createElement("span");
    tag.className = "score";
    tag.textContent = m.keep ? "keep" : m.same_content ? "same file" :
      m.similarity === null ? "" : m.similarity.toFixed(3);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = basename(m.path);
    const size = document.createElement("span");
    size.className = "muted";
    size.textContent = m.width ? m.width + "×" + m.height : "";
    info.append(tag, name, size);
    li.append(open, info);
    return li;
  }

  function route() { showView(location.hash === "#dupes" ? "dupes" : "search"); }

  function wireDupes() {
    $("dupes-form").addEventListener("submit", (e) => { e.preventDefault(); findDupes(); });
    $("search-form").addEventListener("submit", () => { if (location.hash === "#dupes") location.hash = ""; });
    window.addEventListener("hashchange", route);
    route();
  }

  wire();
  wireDupes();
  loadStatus();
})();
