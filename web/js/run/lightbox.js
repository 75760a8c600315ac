// A lightbox for result images: a click on a gallery image shows it large over the editor (Escape, a click outside
// or the close button shuts it; the arrow keys step through the gallery). The image opens in a new tab only when
// asked (middle click or Ctrl/Cmd+click keep the link's default).

export class Lightbox {
  constructor() {
    this.root = document.createElement("div");
    this.root.id = "lightbox";
    this.root.hidden = true;
    this.img = document.createElement("img");
    this.caption = document.createElement("div");
    this.caption.className = "lightbox-caption";
    const close = document.createElement("button");
    close.className = "lightbox-close";
    close.textContent = "×";
    close.title = "Close (Esc)";
    close.addEventListener("click", () => this.close());
    this.root.append(this.img, this.caption, close);
    this.root.addEventListener("click", (e) => { if (e.target === this.root) this.close(); });
    document.addEventListener("keydown", (e) => {
      if (this.root.hidden) return;
      if (e.key === "Escape") this.close();
      else if (e.key === "ArrowRight" || e.key === "ArrowLeft") this.step(e.key === "ArrowRight" ? 1 : -1);
      else return;
      e.preventDefault();
    });
    document.body.append(this.root);
    this.items = [];
    this.index = 0;
  }

  /** Show `links[index]` (anchors whose href is the image and whose title is the caption). */
  open(links, index) {
    this.items = links;
    this.index = index;
    this.show();
    this.root.hidden = false;
  }

  show() {
    const link = this.items[this.index];
    if (!link) return;
    this.img.src = link.href;
    this.caption.textContent = `${link.title} (${this.index + 1} of ${this.items.length})`;
  }

  step(delta) {
    if (!this.items.length) return;
    this.index = (this.index + delta + this.items.length) % this.items.length;
    this.show();
  }

  close() {
    this.root.hidden = true;
    this.img.removeAttribute("src");
  }
}
