// A file form that takes a chosen or a dropped file: the upload and video pages share it.

/** Call `onFile(file)` when `form` is submitted, `input` changes, or a file is dropped on `form`. */
export function acceptFiles(form, input, onFile) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onFile(input.files[0]);
  });
  input.addEventListener("change", () => onFile(input.files[0]));
  form.addEventListener("dragover", (event) => {
    event.preventDefault();
    form.classList.add("dragging");
  });
  form.addEventListener("dragleave", () => form.classList.remove("dragging"));
  form.addEventListener("drop", (event) => {
    event.preventDefault();
    form.classList.remove("dragging");
    onFile(event.dataTransfer.files[0]);
  });
}
