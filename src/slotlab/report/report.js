/* slotlab report: draws the images of the report from the embedded data (#report-data) and
 * handles the interaction. Plain ES2017, no library, no network.
 *
 * Arrays are quantised (slotlab/report/build.py `pack`): value = lo + q * step in float64, q the
 * little-endian unsigned integers (u8 or u16) in the base64 `data`, C order of `shape`.
 *
 * Test hook (used by the browser test, handled after the first drawing): the URL hash
 *   #test-frame=F&test-iterations=T&test-drop=I:K,I:K&test-hover=I:K&test-probe=I:Y:X;I:Y:X
 * shows frame F (video), selects T iterations, clicks slot K of image I (the same click handler
 * as a user's click),
 * hovers slots (a mouseenter event), and
 * writes into the element #test-results a JSON object with the number of images and slots, the
 * kept slots, and for each probe the recombined image's float RGB at pixel (Y, X) of image I and
 * the bytes drawn on its canvas there.
 */
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var H = DATA.height, W = DATA.width, K = DATA.num_slots, HW = H * W;
  var SCALE = Math.max(1, Math.ceil(128 / Math.max(H, W)));
  var VIDEO = DATA.task === "video";
  var OD = !VIDEO ? DATA.task === "object_discovery" : true;  // slots drawn as images
  var state = {
    t: Math.max(0, DATA.iterations.indexOf(DATA.default_iterations)),
    frame: 0,      // video: the frame shown
    timer: null,   // video: the player's interval
    full: [],      // per image: per iteration index: the decoded arrays (all frames)
    kept: [],      // per image: K booleans
    hover: [],     // per image: the hovered slot or -1
    cache: [],     // per image: per iteration index: decoded arrays and masks
    cards: [],     // per image: its canvases and slot elements
    input: [],     // per image: decoded input [3, H, W] bytes
    mask: [],      // per image: ground-truth ids [H, W] (video: [T, H, W]) or null
    targetTruth: [] // per clip: the true decoder target (flow as RGB) bytes, or null
  };

  // ----------------------------------------------------------------------------------------
  // Data
  // ----------------------------------------------------------------------------------------
  function bytesOf(packed) {
    var bin = atob(packed.data), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  function integers(packed) {
    var bytes = bytesOf(packed);
    if (packed.q === "u8") return bytes;
    var view = new DataView(bytes.buffer), out = new Uint16Array(bytes.length / 2);
    for (var i = 0; i < out.length; i++) out[i] = view.getUint16(2 * i, true);
    return out;
  }

  /** The float64 values of a packed array: lo + q * step (build.py `unpack`). */
  function decode(packed) {
    var q = integers(packed), out = new Float64Array(q.length);
    var lo = packed.lo, step = packed.step;
    for (var i = 0; i < q.length; i++) out[i] = lo + q[i] * step;
    return out;
  }

  function colour(k) { return DATA.palette[k % DATA.palette.length]; }

  function toByte(x) {
    var v = (x + 1) * 127.5;
    v = v < 0 ? 0 : (v > 255 ? 255 : v);
    return Math.floor(v + 0.5);
  }

  /** Softmax over the slots where `use[k]` of the logits [K, H, W]; zero elsewhere. */
  function softmaxMasks(logits, use) {
    var masks = new Float64Array(K * HW), e = new Float64Array(K);
    for (var p = 0; p < HW; p++) {
      var m = -Infinity, k;
      for (k = 0; k < K; k++) if (use[k] && logits[k * HW + p] > m) m = logits[k * HW + p];
      var sum = 0;
      for (k = 0; k < K; k++) {
        e[k] = use[k] ? Math.exp(logits[k * HW + p] - m) : 0;
        sum += e[k];
      }
      for (k = 0; k < K; k++) if (use[k]) masks[k * HW + p] = e[k] / sum;
    }
    return masks;
  }

  /** sum_k masks_k * rgb_k over the used slots: [3, H, W]. */
  function combine(rgb, masks, use) {
    var out = new Float64Array(3 * HW);
    for (var c = 0; c < 3; c++) {
      for (var p = 0; p < HW; p++) {
        var v = 0;
        for (var k = 0; k < K; k++) if (use[k]) v += masks[k * HW + p] * rgb[(k * 3 + c) * HW + p];
        out[c * HW + p] = v;
      }
    }
    return out;
  }

  /** The frame of image (clip) i shown now: 0 for still images. */
  function frameOf(i) { return VIDEO ? Math.min(state.frame, DATA.images[i].frames - 1) : 0; }

  /** A frame's part [f * size, (f + 1) * size) of an array of all frames. */
  function frameSlice(array, f, size) {
    return VIDEO ? array.subarray(f * size, (f + 1) * size) : array;
  }

  function entry(i) {
    var per = state.cache[i], f = frameOf(i), key = state.t + ":" + f;
    if (!per[key]) {
      var raw = DATA.images[i].per_t[state.t], full = state.full[i][state.t];
      if (!full) {
        full = state.full[i][state.t] = {
          attention: raw.attention ? decode(raw.attention) : null,
          rgb: raw.rgb ? decode(raw.rgb) : null,
          logits: raw.logits ? decode(raw.logits) : null
        };
      }
      var d = { iterations: raw.attention ? (VIDEO ? 1 : raw.attention.shape[0]) : 0 };
      d.attention = full.attention ? frameSlice(full.attention, f, K * HW) : null;
      if (OD) {
        d.rgb = frameSlice(full.rgb, f, K * 3 * HW);
        d.logits = frameSlice(full.logits, f, K * HW);
        var all = [];
        for (var k = 0; k < K; k++) all.push(true);
        d.masks = softmaxMasks(d.logits, all);
        d.recon = combine(d.rgb, d.masks, all);
      }
      per[key] = d;
    }
    return per[key];
  }

  // ----------------------------------------------------------------------------------------
  // Drawing
  // ----------------------------------------------------------------------------------------
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function figure(label, cls) {
    var fig = el("figure", "view" + (cls ? " " + cls : ""));
    var canvas = document.createElement("canvas");
    canvas.width = W;
    canvas.height = H;
    canvas.style.width = W * SCALE + "px";
    canvas.style.height = H * SCALE + "px";
    fig.appendChild(canvas);
    fig.appendChild(el("figcaption", "", label));
    return { node: fig, canvas: canvas, caption: fig.lastChild };
  }

  /** Fill a canvas from pixel(p, out) writing bytes r, g, b into out. */
  function paint(canvas, pixel) {
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(W, H), rgb = [0, 0, 0];
    for (var p = 0; p < HW; p++) {
      pixel(p, rgb);
      img.data[4 * p] = rgb[0];
      img.data[4 * p + 1] = rgb[1];
      img.data[4 * p + 2] = rgb[2];
      img.data[4 * p + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  function paintFloat(canvas, image) {
    paint(canvas, function (p, out) {
      out[0] = toByte(image[p]);
      out[1] = toByte(image[HW + p]);
      out[2] = toByte(image[2 * HW + p]);
    });
  }

  /** Per pixel, the weight of the slot shown by `hover` in the input (or null). */
  function highlightWeights(i) {
    var k = state.hover[i];
    if (k < 0) return null;
    var d = entry(i), w = new Float64Array(HW), p;
    if (OD) {
      for (p = 0; p < HW; p++) w[p] = d.masks[k * HW + p];
    } else {
      var last = (d.iterations - 1) * K * HW, max = 1e-12;
      for (p = 0; p < HW; p++) max = Math.max(max, d.attention[last + k * HW + p]);
      for (p = 0; p < HW; p++) w[p] = d.attention[last + k * HW + p] / max;
    }
    return w;
  }

  function drawInput(i) {
    var card = state.cards[i], w = highlightWeights(i);
    var input = frameSlice(state.input[i], frameOf(i), 3 * HW);
    paint(card.input.canvas, function (p, out) {
      var f = w ? 0.2 + 0.8 * w[p] : 1;
      out[0] = Math.round(input[p] * f);
      out[1] = Math.round(input[HW + p] * f);
      out[2] = Math.round(input[2 * HW + p] * f);
    });
    var name = VIDEO ? "frame " + (frameOf(i) + 1) : "input";
    card.input.caption.textContent = state.hover[i] < 0 ? name : name + ": slot " + state.hover[i];
  }

  function drawAttention(i) {
    var d = entry(i), card = state.cards[i], hover = state.hover[i];
    var row = card.attentionRow;
    while (row.firstChild) row.removeChild(row.firstChild);
    card.attention = [];
    for (var t = 0; t < d.iterations; t++) {
      var fig = figure((VIDEO ? "attention, frame " + (frameOf(i) + 1) : "attention " + (t + 1)) +
                       (hover < 0 ? "" : ": slot " + hover));
      row.appendChild(fig.node);
      card.attention.push(fig);
      var base = t * K * HW;
      paint(fig.canvas, function (p, out) {
        var r = 0, g = 0, b = 0, k, a, c;
        if (hover >= 0) {
          a = d.attention[base + hover * HW + p];
          c = colour(hover);
          r = 255 * (1 - a) + c[0] * a; g = 255 * (1 - a) + c[1] * a; b = 255 * (1 - a) + c[2] * a;
        } else {
          for (k = 0; k < K; k++) {
            a = d.attention[base + k * HW + p];
            c = colour(k);
            r += a * c[0]; g += a * c[1]; b += a * c[2];
          }
        }
        out[0] = Math.round(r); out[1] = Math.round(g); out[2] = Math.round(b);
      });
    }
  }

  function argmaxSlots(logits) {
    var seg = new Int32Array(HW);
    for (var p = 0; p < HW; p++) {
      var best = 0;
      for (var k = 1; k < K; k++) if (logits[k * HW + p] > logits[best * HW + p]) best = k;
      seg[p] = best;
    }
    return seg;
  }

  function edge(ids, p) {
    var x = p % W;
    return (x + 1 < W && ids[p + 1] !== ids[p]) || (p + W < HW && ids[p + W] !== ids[p]);
  }

  function drawSegmentation(i) {
    var d = entry(i), card = state.cards[i], seg = argmaxSlots(d.logits);
    paint(card.segmentation.canvas, function (p, out) {
      var c = colour(seg[p]), f = edge(seg, p) ? 0.55 : 1;
      out[0] = Math.round(c[0] * f); out[1] = Math.round(c[1] * f); out[2] = Math.round(c[2] * f);
    });
    var ids = state.mask[i] ? frameSlice(state.mask[i], frameOf(i), HW) : null;
    if (!ids) return;
    // each ground-truth segment in the colour of the slot that covers most of it
    var votes = {}, owner = {}, p, id;
    for (p = 0; p < HW; p++) {
      id = ids[p];
      if (!votes[id]) votes[id] = new Int32Array(K);
      votes[id][seg[p]] += 1;
    }
    Object.keys(votes).forEach(function (key) {
      var v = votes[key], best = 0;
      for (var k = 1; k < K; k++) if (v[k] > v[best]) best = k;
      owner[key] = best;
    });
    paint(card.truth.canvas, function (q, out) {
      var c = colour(owner[ids[q]]), f = edge(ids, q) ? 0.35 : 1;
      out[0] = Math.round(c[0] * f); out[1] = Math.round(c[1] * f); out[2] = Math.round(c[2] * f);
    });
  }

  function drawSlots(i) {
    var d = entry(i), card = state.cards[i];
    for (var k = 0; k < K; k++) {
      (function (k) {
        paint(card.slots[k].canvas, function (p, out) {
          var m = d.masks[k * HW + p];
          for (var c = 0; c < 3; c++) {
            out[c] = toByte(d.rgb[(k * 3 + c) * HW + p] * m + (1 - m));
          }
        });
      })(k);
      card.slots[k].node.classList.toggle("dropped", !state.kept[i][k]);
      card.slots[k].node.setAttribute("aria-pressed", state.kept[i][k] ? "false" : "true");
    }
  }

  function drawRecombined(i) {
    var d = entry(i), card = state.cards[i], kept = state.kept[i];
    var masks = softmaxMasks(d.logits, kept);
    card.recombinedValues = combine(d.rgb, masks, kept);
    var n = kept.filter(Boolean).length;
    if (n === 0) {
      paint(card.recombined.canvas, function (p, out) { out[0] = out[1] = out[2] = 255; });
    } else {
      paintFloat(card.recombined.canvas, card.recombinedValues);
    }
    card.recombined.caption.textContent = n === K ? "recombined (all slots)" :
      "recombined (" + n + " of " + K + " slots)";
  }

  function formatMetric(v) { return v === null || v === undefined ? "—" : v.toFixed(3); }

  function drawMetrics(i) {
    var raw = DATA.images[i].per_t[state.t], card = state.cards[i];
    if (!OD) {
      var found = raw.slots.filter(function (s) { return s.prediction.p > 0.5; }).length;
      card.metrics.textContent = found + " slots with objectness > 0.5; " +
        (DATA.images[i].objects ? DATA.images[i].objects.length + " objects" : "no ground truth");
      return;
    }
    var m = raw.metrics, parts = [];
    if ("fg_ari" in m) parts.push("FG-ARI " + formatMetric(m.fg_ari));
    if ("mbo" in m) parts.push("mBO " + formatMetric(m.mbo));
    if ("ari" in m) parts.push("ARI " + formatMetric(m.ari));
    if ("mse" in m) parts.push("MSE " + (m.mse === null ? "—" : m.mse.toExponential(2)));
    card.metrics.textContent = parts.join(" · ");
  }

  function describe(o) {
    return o.size + " " + o.color + " " + o.material + " " + o.shape + " at (" +
      o.coords.map(function (c) { return c.toFixed(2); }).join(", ") + ")";
  }

  function drawSetTable(i) {
    var raw = DATA.images[i].per_t[state.t], card = state.cards[i];
    for (var k = 0; k < K; k++) {
      var s = raw.slots[k], row = card.slots[k].node, cells = row.children;
      // cells: slot, objectness, predicted, matched ground truth, distance, attributes
      cells[1].textContent = s.prediction.p.toFixed(3);
      cells[2].textContent = describe(s.prediction);
      row.classList.toggle("absent", s.prediction.p <= 0.5);
      if (s.target) {
        var names = Object.keys(s.right);
        var wrong = names.filter(function (a) { return !s.right[a]; });
        cells[3].textContent = "#" + s.target.index + " " + describe(s.target);
        cells[4].textContent = s.distance.toFixed(2);
        cells[5].textContent = (names.length - wrong.length) + "/" + names.length +
          (wrong.length ? " (" + wrong.join(", ") + " wrong)" : "");
        cells[5].className = wrong.length ? "bad" : "ok";
      } else {
        cells[3].textContent = DATA.images[i].objects ? "— (no object: a padding row)" : "—";
        cells[4].textContent = "—";
        cells[5].textContent = "";
        cells[5].className = "";
      }
    }
  }

  function drawImage(i) {
    drawInput(i);
    drawAttention(i);
    drawMetrics(i);
    if (OD) {
      var d = entry(i), card = state.cards[i];
      paintFloat(card.recon.canvas, d.recon);
      if (card.targetTruth) {
        var truth = frameSlice(state.targetTruth[i], frameOf(i), 3 * HW);
        paint(card.targetTruth.canvas, function (p, out) {
          out[0] = truth[p]; out[1] = truth[HW + p]; out[2] = truth[2 * HW + p];
        });
      }
      drawRecombined(i);
      drawSegmentation(i);
      drawSlots(i);
    } else {
      drawSetTable(i);
    }
  }

  // ----------------------------------------------------------------------------------------
  // Interaction
  // ----------------------------------------------------------------------------------------
  function hoverSlot(i, k) {
    state.hover[i] = k;
    drawInput(i);
    drawAttention(i);
    state.cards[i].slots.forEach(function (s, j) { s.node.classList.toggle("hovered", j === k); });
  }

  function toggleSlot(i, k) {
    state.kept[i][k] = !state.kept[i][k];
    drawRecombined(i);
    drawSlots(i);
  }

  function setIterations(index) {
    state.t = index;
    var radios = document.querySelectorAll("#controls input[name=iterations]");
    for (var r = 0; r < radios.length; r++) radios[r].checked = Number(radios[r].value) === index;
    for (var i = 0; i < DATA.images.length; i++) drawImage(i);
  }

  function setFrame(f) {
    state.frame = f;
    var slider = document.getElementById("frame-slider");
    slider.value = String(f);
    document.getElementById("frame-label").textContent = (f + 1) + " / " + (Number(slider.max) + 1);
    for (var i = 0; i < DATA.images.length; i++) drawImage(i);
  }

  function buildPlayer(box) {
    var frames = Math.max.apply(null, DATA.images.map(function (im) { return im.frames; }));
    var group = el("fieldset", "player");
    group.appendChild(el("legend", "", "frame"));
    var play = el("button", "", "play");
    play.type = "button";
    play.id = "frame-play";
    var slider = document.createElement("input");
    slider.type = "range";
    slider.id = "frame-slider";
    slider.min = "0";
    slider.max = String(Math.max(0, frames - 1));
    slider.value = "0";
    slider.addEventListener("input", function () { setFrame(Number(slider.value)); });
    play.addEventListener("click", function () {
      if (state.timer !== null) {
        clearInterval(state.timer);
        state.timer = null;
        play.textContent = "play";
      } else {
        state.timer = setInterval(function () { setFrame((state.frame + 1) % frames); }, 500);
        play.textContent = "pause";
      }
    });
    group.appendChild(play);
    group.appendChild(slider);
    var label = el("span", "", "1 / " + frames);
    label.id = "frame-label";
    group.appendChild(label);
    box.appendChild(group);
    box.appendChild(el("span", "note", DATA.iterations[0] + " Slot Attention iteration(s) " +
                       "per frame"));
  }

  function buildControls() {
    var box = document.getElementById("controls");
    if (VIDEO) {
      buildPlayer(box);
    } else {
      buildIterations(box);
    }
    if (OD) {
      var reset = el("button", "", "keep all slots");
      reset.type = "button";
      reset.addEventListener("click", function () {
        for (var i = 0; i < DATA.images.length; i++) {
          for (var k = 0; k < K; k++) state.kept[i][k] = true;
          drawRecombined(i);
          drawSlots(i);
        }
      });
      box.appendChild(reset);
    }
  }

  function buildIterations(box) {
    var group = el("fieldset", "iterations");
    group.appendChild(el("legend", "", "test-time iterations"));
    DATA.iterations.forEach(function (t, index) {
      var label = el("label"), radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "iterations";
      radio.value = String(index);
      radio.checked = index === state.t;
      radio.addEventListener("change", function () { setIterations(index); });
      label.appendChild(radio);
      label.appendChild(document.createTextNode(" " + t + (t === DATA.trained_iterations ?
        " (as trained)" : "")));
      group.appendChild(label);
    });
    box.appendChild(group);
  }

  function slotLabel(k, text) {
    var label = el("span", "slot-label");
    var swatch = el("span", "swatch");
    var c = colour(k);
    swatch.style.background = "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")";
    label.appendChild(swatch);
    label.appendChild(document.createTextNode(text));
    return label;
  }

  function buildCard(i) {
    var info = DATA.images[i], card = { slots: [] };
    var node = el("article", "image-card");
    node.setAttribute("data-image", String(i));
    var head = el("h3", "", (VIDEO ? "clip " : "image ") + i);
    card.metrics = el("span", "image-metrics");
    head.appendChild(card.metrics);
    node.appendChild(head);
    var main = el("div", "row");
    card.input = figure(VIDEO ? "frame 1" : "input");
    main.appendChild(card.input.node);
    if (OD) {
      var decoded = VIDEO ? "decoded " + (DATA.target === "flow" ? "flow" : "frames") : "";
      card.recon = figure(VIDEO ? decoded + " (all slots)" : "reconstruction");
      if (info.target_truth) {
        card.targetTruth = figure("true " + (DATA.target === "flow" ? "flow" : "target"));
        main.appendChild(card.targetTruth.node);
      }
      card.recombined = figure("recombined (all slots)", "recombined");
      card.segmentation = figure("segmentation (argmax of masks)");
      [card.recon, card.recombined, card.segmentation].forEach(function (f) {
        main.appendChild(f.node);
      });
      if (info.mask) {
        card.truth = figure("ground truth (coloured by its main slot)");
        main.appendChild(card.truth.node);
      }
    }
    node.appendChild(main);
    if (OD) {
      var slots = el("div", "row slots");
      for (var k = 0; k < K; k++) {
        var f = figure("", "slot");
        f.caption.appendChild(slotLabel(k, "slot " + k));
        f.node.tabIndex = 0;
        f.node.setAttribute("role", "button");
        f.node.setAttribute("data-slot", String(k));
        f.node.title = "click to drop or keep slot " + k;
        slots.appendChild(f.node);
        card.slots.push(f);
      }
      node.appendChild(slots);
    } else {
      var table = el("table", "objects");
      var header = el("tr");
      ["slot", "objectness", "predicted", "matched ground truth", "distance",
       "attributes"].forEach(function (h) { header.appendChild(el("th", "", h)); });
      table.appendChild(header);
      for (var j = 0; j < K; j++) {
        var row = el("tr", "slot");
        row.setAttribute("data-slot", String(j));
        var first = el("td");
        first.appendChild(slotLabel(j, String(j)));
        row.appendChild(first);
        for (var c = 0; c < 5; c++) row.appendChild(el("td"));
        table.appendChild(row);
        card.slots.push({ node: row });
      }
      node.appendChild(table);
    }
    if (info.per_t[0].attention) {
      node.appendChild(el("div", "row-label", VIDEO ?
        "the corrector's attention on this frame (slot colours mixed)" :
        "attention of every iteration (slot colours mixed)"));
    }
    card.attentionRow = el("div", "row attention");
    node.appendChild(card.attentionRow);
    card.slots.forEach(function (s, k) {
      s.node.addEventListener("mouseenter", function () { hoverSlot(i, k); });
      s.node.addEventListener("mouseleave", function () { hoverSlot(i, -1); });
      if (OD) {
        s.node.addEventListener("click", function () { toggleSlot(i, k); });
        s.node.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            toggleSlot(i, k);
          }
        });
      }
    });
    card.node = node;
    return card;
  }

  // ----------------------------------------------------------------------------------------
  // Test hook
  // ----------------------------------------------------------------------------------------
  function runTestHook() {
    var params = new URLSearchParams(window.location.hash.slice(1));
    var asked = ["test", "test-iterations", "test-drop", "test-probe", "test-hover",
                 "test-frame"].some(function (name) {
      return params.has(name);
    });
    if (!asked) return;
    if (VIDEO && params.get("test-frame")) setFrame(Number(params.get("test-frame")));
    if (params.get("test-iterations")) {
      setIterations(DATA.iterations.indexOf(Number(params.get("test-iterations"))));
    }
    (params.get("test-drop") || "").split(",").filter(Boolean).forEach(function (pair) {
      var ik = pair.split(":").map(Number);
      state.cards[ik[0]].slots[ik[1]].node.click();
    });
    (params.get("test-hover") || "").split(",").filter(Boolean).forEach(function (pair) {
      var ik = pair.split(":").map(Number);
      state.cards[ik[0]].slots[ik[1]].node.dispatchEvent(new MouseEvent("mouseenter"));
    });
    var probes = (params.get("test-probe") || "").split(";").filter(Boolean).map(function (s) {
      var iyx = s.split(":").map(Number), i = iyx[0], y = iyx[1], x = iyx[2];
      var card = state.cards[i], p = y * W + x, probe = { image: i, y: y, x: x };
      if (OD) {
        probe.value = [0, 1, 2].map(function (c) { return card.recombinedValues[c * HW + p]; });
        var px = card.recombined.canvas.getContext("2d").getImageData(x, y, 1, 1).data;
        probe.pixel = [px[0], px[1], px[2]];
      }
      return probe;
    });
    var result = {
      images: document.querySelectorAll(".image-card").length,
      slots: state.cards.map(function (c) { return c.node.querySelectorAll(".slot").length; }),
      attention: state.cards.map(function (c) { return c.attention.length; }),
      iterations: DATA.iterations[state.t],
      frame: state.frame,
      kept: state.kept.map(function (kept) {
        return kept.map(function (v, k) { return v ? k : -1; }).filter(function (k) {
          return k >= 0;
        });
      }),
      probes: probes,
      errors: window.__reportErrors || []
    };
    var out = document.getElementById("test-results");
    out.textContent = JSON.stringify(result);
  }

  // ----------------------------------------------------------------------------------------
  // Start
  // ----------------------------------------------------------------------------------------
  buildControls();
  var list = document.getElementById("image-list");
  DATA.images.forEach(function (info, i) {
    state.kept.push(new Array(K).fill(true));
    state.hover.push(-1);
    state.cache.push([]);
    state.input.push(integers(info.input));
    state.full.push([]);
    state.targetTruth.push(info.target_truth ? integers(info.target_truth) : null);
    state.mask.push(info.mask ? integers(info.mask) : null);
    var card = buildCard(i);
    state.cards.push(card);
    list.appendChild(card.node);
    drawImage(i);
  });
  runTestHook();
  document.documentElement.setAttribute("data-ready", "1");
})();
