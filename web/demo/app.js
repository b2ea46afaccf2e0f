// The demo page's logic (placeholder until the page is built).
