// A file form that takes a chosen or a dropped file: the upload and video pages share it.

/**
 * Call `onFile(file)` when `form` is submitted, and, with `startOnChoose`, as soon as a file is chosen
 * or dropped. A dropped file becomes the input's file, so that Analyse sends it again (it sent the
 * input's older file, or none). A file dropped beside the form is ignored, not opened by the browser in
 * place of the page.
 */
export function acceptFiles(form, input, onFile, { startOnChoose = true, onChoose = () => {} } = {}) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onFile(input.files[0]);
  });
  const chosen = () => (startOnChoose ? onFile(input.files[0]) : onChoose(input.files[0]));
  input.addEventListener("change", chosen);
  form.addEventListener("dragover", (event) => {
    event.preventDefault();
    form.classList.add("dragging");
  });
  form.addEventListener("dragleave", () => form.classList.remove("dragging"));
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dragging");
    const files = event.dataTransfer.files;
    if (!files.length || input.disabled) return onFile(files[0]); // the page says why it cannot take it
    input.files = files;
    chosen();
  });
  for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());
}
