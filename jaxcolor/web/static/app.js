// The page's behavior: upload, show, compare, download. No inline script
// (the page's content policy allows scripts from this server only).
"use strict";
const $ = id => document.getElementById(id);
let current = null, busy = false, timer = null;

function say(text, error) {
  $("message").textContent = text;
  $("status").classList.toggle("error", Boolean(error));
}

function working(name) {
  const start = performance.now();
  $("spinner").hidden = false;
  const tick = () => say("Colorizing " + name + "... " +
      ((performance.now() - start) / 1000).toFixed(0) + " s");
  tick();
  timer = setInterval(tick, 500);
}

function done() {
  clearInterval(timer);
  $("spinner").hidden = true;
}

async function run(file) {
  if (busy) return;
  busy = true;
  current = file;
  working(file.name);
  const size = $("size").value;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch("/api/colorize?render_size=" + size,
                                 {method: "POST", body: form});
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error; } catch (e) {}
      throw new Error(message);
    }
    const url = URL.createObjectURL(await response.blob());
    // The gray side is the result shown without color: its lightness is the
    // upload's, and the browser need not decode the upload (TIFF, say).
    await show(url);
    const link = $("download");
    link.href = url;
    link.download = file.name.replace(/\.[^.]*$/, "") + "_colorized.png";
    link.hidden = false;
    done();
    say("Done: drag the slider to compare the gray input with the colors.");
  } catch (error) {
    done();
    // The previous result and its download link stay as they were.
    say("Error: " + error.message, true);
  } finally {
    busy = false;
  }
}

function show(url) {
  return new Promise((resolve, reject) => {
    const after = $("after");
    after.onload = () => {
      $("before").src = url;
      $("compare").hidden = false;
      $("slider").hidden = false;
      $("slider").style.width = $("compare").clientWidth + "px";
      resolve();
    };
    after.onerror = () => reject(new Error("the result could not be shown."));
    after.src = url;
  });
}

function slide(value) {
  $("after").style.clipPath = "inset(0 0 0 " + value + "%)";
  $("divider").style.left = value + "%";
}

async function example(src) {
  const response = await fetch(src);
  const blob = await response.blob();
  run(new File([blob], src.split("/").pop(), {type: blob.type}));
}

window.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop");
  $("slider").addEventListener("input", e => slide(e.target.value));
  $("file").addEventListener("change", e => e.target.files[0] && run(e.target.files[0]));
  $("size").addEventListener("change", () => current && run(current));
  for (const button of document.querySelectorAll(".example")) {
    button.addEventListener("click", () => example(button.dataset.src));
  }
  drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", e => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]);
  });
});
