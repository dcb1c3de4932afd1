// The demo shop: a single-page app with three views (home, product, cart),
// instrumented with footfall.js. Page views, scrolls, clicks, hovers, section
// visibility and form submits are recorded by the tracker on its own; the shop
// only tracks what it alone knows: products viewed, carts and purchases.
"use strict";

const config = JSON.parse(document.getElementById("footfall-config").textContent);

const CURRENCY = "EUR";
const PRODUCTS = [
  { id: "1", name: "Trail running shoes", category: "shoes", price: 89, colour: "#4f7cac", blurb: "Grip for wet roots and loose gravel, light enough for race day." },
  { id: "2", name: "Merino base layer", category: "clothing", price: 59.5, colour: "#9c6644", blurb: "Warm when damp, never itchy, and it does not keep a smell." },
  { id: "3", name: "Packable rain shell", category: "clothing", price: 129, colour: "#2a9d8f", blurb: "Folds into its own pocket; taped seams keep a downpour out." },
  { id: "4", name: "Hydration vest", category: "gear", price: 74.9, colour: "#e76f51", blurb: "Two soft flasks up front, room for a jacket and a snack behind." },
  { id: "5", name: "Head torch", category: "gear", price: 39, colour: "#264653", blurb: "Four hundred lumens, a red mode for map reading, and a day of light." },
  { id: "6", name: "Trekking poles", category: "gear", price: 99, colour: "#8a5a83", blurb: "Carbon, three sections, and cork grips that stay dry in the hand." },
];

const view = document.getElementById("view");
const money = (amount) => new Intl.NumberFormat("en", { style: "currency", currency: CURRENCY }).format(amount);
const product = (id) => PRODUCTS.find((item) => item.id === id);
let searchResults = null; // the products a search found, while the home view shows them

// -- the cart (this tab only) ----------------------------------------------------

const cart = {
  items: () => JSON.parse(sessionStorage.getItem("shop_cart") || "[]"),
  save(items) {
    sessionStorage.setItem("shop_cart", JSON.stringify(items));
    document.getElementById("cart-count").textContent = items.reduce((n, item) => n + item.quantity, 0);
  },
  add(id) {
    const items = cart.items();
    const line = items.find((item) => item.id === id);
    if (line) line.quantity += 1;
    else items.push({ id, quantity: 1 });
    cart.save(items);
  },
  value: (items) => Math.round(items.reduce((sum, item) => sum + product(item.id).price * item.quantity, 0) * 100) / 100,
};

function addToCart(id) {
  const item = product(id);
  cart.add(id);
  footfall.track("add_to_cart", { product_id: id, category: item.category, price: item.price, quantity: 1, currency: CURRENCY });
}

// -- views -----------------------------------------------------------------------

function card(item) {
  return `
    <article class="card" data-ff-section="card-${item.id}" data-ff-hover="card-${item.id}">
      <div class="swatch" style="background:${item.colour}"></div>
      <h3><a href="/product/${item.id}" data-ff="product-link">${item.name}</a></h3>
      <p class="price">${money(item.price)}</p>
      <button type="button" class="add" data-ff="add-to-cart" data-product="${item.id}">Add to cart</button>
    </article>`;
}

function home() {
  document.title = "Footfall demo shop";
  const shown = searchResults || PRODUCTS;
  view.innerHTML = `
    <section class="hero" data-ff-section="hero">
      <h1>Kit for long days outside</h1>
      <p>Six things we would pack ourselves. Browse, add to the cart, check out:
         every step shows up in the panel on the right.</p>
    </section>
    ${searchResults ? `<p class="found">${shown.length} found. <a href="/" data-ff="clear-search">Show everything</a></p>` : ""}
    <section class="grid" data-ff-section="catalogue">${shown.map(card).join("")}</section>
    <section class="story" data-ff-section="story">
      <h2>Why this shop exists</h2>
      ${"<p>It is a demo. Scroll down and the tracker records how far you got (25, 50, 75 and 100 %), how long each section was on screen, and how long you stayed, counting only the time this tab was visible.</p>".repeat(6)}
    </section>`;
}

function productView(id) {
  const item = product(id);
  if (!item) return notFound();
  document.title = `${item.name} · Footfall demo shop`;
  view.innerHTML = `
    <article class="detail">
      <div class="swatch big" style="background:${item.colour}"></div>
      <div>
        <h1>${item.name}</h1>
        <p class="price">${money(item.price)}</p>
        <p>${item.blurb}</p>
        <button type="button" class="add" data-ff="add-to-cart" data-product="${item.id}">Add to cart</button>
      </div>
    </article>
    <section class="story" data-ff-section="details">
      <h2>Details</h2>
      ${`<p>${item.blurb} Made to last, repaired for free in the first two years, and shipped without plastic.</p>`.repeat(8)}
    </section>`;
}

// What only the shop knows about a view: which product it shows.
function announce() {
  const [, first, second] = location.pathname.split("/");
  const item = first === "product" && product(second);
  if (item) footfall.track("view_product", { product_id: item.id, category: item.category, price: item.price, currency: CURRENCY, signal: "passive" });
}

function cartView(placed) {
  document.title = "Cart · Footfall demo shop";
  const items = cart.items();
  if (placed) {
    view.innerHTML = `<section class="thanks" data-ff-section="thanks"><h1>Thank you</h1>
      <p>Order <code>${placed}</code> is placed (not really: this is a demo).</p><p><a href="/" data-ff="continue">Keep browsing</a></p></section>`;
    return;
  }
  if (!items.length) {
    view.innerHTML = `<section class="thanks"><h1>Your cart is empty</h1><p><a href="/" data-ff="continue">Find something</a></p></section>`;
    return;
  }
  const lines = items.map((line) => {
    const item = product(line.id);
    return `<li><span>${item.name} × ${line.quantity}</span><span>${money(item.price * line.quantity)}</span></li>`;
  }).join("");
  view.innerHTML = `
    <section class="cart" data-ff-section="cart">
      <h1>Your cart</h1>
      <ul class="lines">${lines}</ul>
      <p class="total">Total <strong>${money(cart.value(items))}</strong></p>
      <button type="button" id="checkout" data-ff="checkout">Go to checkout</button>
    </section>
    <form id="checkout-form" class="checkout" data-ff="checkout-form" hidden>
      <h2>Checkout</h2>
      <label>Name <input name="name" autocomplete="name" required></label>
      <label>Email <input name="email" type="email" autocomplete="email" required></label>
      <div class="card-fields" data-ff-ignore>
        <label>Card number <input name="card" inputmode="numeric" autocomplete="cc-number" required></label>
        <label>Password for this shop <input name="password" type="password" autocomplete="new-password"></label>
        <p class="note" data-ff="card-note">Nothing in this box is ever looked at by the tracker (data-ff-ignore).</p>
      </div>
      <button type="submit" data-ff="place-order">Place order</button>
    </form>`;
}

function notFound() {
  document.title = "Not found · Footfall demo shop";
  view.innerHTML = `<section class="thanks"><h1>Nothing here</h1><p><a href="/" data-ff="continue">Back to the shop</a></p></section>`;
}

function render(placed) {
  const [, first, second] = location.pathname.split("/");
  if (first === "") home();
  else if (first === "product") productView(second);
  else if (first === "cart") cartView(placed);
  else notFound();
  window.scrollTo(0, 0);
}

function navigate(path, placed) {
  history.pushState({}, "", path);
  render(placed);
  // After the tracker's page_view of the new view, which it sends once the view is rendered.
  setTimeout(announce, 0);
}

// -- events ----------------------------------------------------------------------

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href^='/']");
  if (link && !event.metaKey && !event.ctrlKey && !event.shiftKey) {
    event.preventDefault();
    if (link.dataset.ff === "clear-search" || link.dataset.ff === "logo") searchResults = null;
    navigate(link.getAttribute("href"));
    return;
  }
  const add = event.target.closest("button.add");
  if (add) {
    addToCart(add.dataset.product);
    add.textContent = "Added ✓";
  }
  if (event.target.id === "checkout") {
    const items = cart.items();
    footfall.track("checkout_started", { cart_size: items.length, value: cart.value(items), currency: CURRENCY });
    document.getElementById("checkout-form").hidden = false;
    event.target.hidden = true;
  }
});

document.addEventListener("submit", (event) => {
  event.preventDefault();
  if (event.target.id === "search") {
    // The shop reads what was typed; the tracker never does (and it is not in the URL).
    const words = new FormData(event.target).get("q").trim().toLowerCase();
    searchResults = PRODUCTS.filter((item) => `${item.name} ${item.category} ${item.blurb}`.toLowerCase().includes(words));
    footfall.track("search", { results: searchResults.length });
    if (location.pathname === "/") render();
    else navigate("/");
  } else if (event.target.id === "checkout-form") {
    const items = cart.items();
    const order = `order-${Date.now().toString(36)}`;
    footfall.track("purchase", {
      order_id: order, revenue: cart.value(items), currency: CURRENCY, product_ids: items.map((item) => item.id),
    });
    cart.save([]);
    navigate("/cart", order);
  }
});

// -- the "your events" panel -------------------------------------------------------

const DETAILS = ["segment_id", "depth", "max_scroll", "dwell_ms", "duration_ms", "visible_ms", "element", "section", "product_id", "revenue", "results", "clicks"];

async function showOwnEvents() {
  const list = document.getElementById("own-events");
  const id = footfall.anonymousId();
  document.getElementById("anonymous-id").textContent = id;
  try {
    const response = await fetch(`${config.eventsUrl}?anonymous_id=${encodeURIComponent(id)}`, { cache: "no-store" });
    if (!response.ok) return;
    const { events } = await response.json();
    if (!events.length) return;
    list.replaceChildren(...events.map((event) => {
      const item = document.createElement("li");
      const time = document.createElement("time");
      time.textContent = new Date(event.timestamp).toLocaleTimeString();
      const name = document.createElement("strong");
      name.textContent = event.event;
      const details = DETAILS.filter((key) => key in event.properties).map((key) => `${key} ${event.properties[key]}`);
      const rest = document.createElement("span");
      rest.textContent = [event.path, ...details].filter(Boolean).join(" · ");
      item.className = event.properties.signal || "";
      item.append(time, " ", name, " ", rest);
      return item;
    }));
  } catch {
    // The server is restarting or gone: try again at the next tick.
  }
}

function showConsent() {
  const off = footfall.consent() === "denied";
  document.getElementById("consent-state").textContent = off ? "off" : "on";
  document.getElementById("consent-toggle").textContent = off ? "Track me again" : "Stop tracking me";
}

document.getElementById("consent-toggle").addEventListener("click", () => {
  if (footfall.consent() === "denied") footfall.optIn();
  else footfall.optOut();
  showConsent();
});

cart.save(cart.items());
render();
footfall.init(config.writeKey); // after the first render, so the first page view sees its content
announce();
// Registered after the tracker's own listener, so announce() follows its page_view.
window.addEventListener("popstate", () => {
  render();
  setTimeout(announce, 0);
});
showConsent();
showOwnEvents();
setInterval(showOwnEvents, 2000);
