// Pay an order by card: save the card with a SetupIntent confirmed by Stripe.js, then pay the
// order with it through the marketplace's API (the session cookie plus the X-CSRFToken header).
(function () {
  "use strict";
  var form = document.getElementById("card-payment");
  if (!form || typeof window.Stripe !== "function") { return; }
  var submit = document.getElementById("card-submit");
  var errors = document.getElementById("card-errors");
  var status = document.getElementById("card-status");
  var headers = {"Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRFToken": form.dataset.csrfToken};

  function post(url, body) {
    return fetch(url, {method: "POST", credentials: "same-origin", headers: headers,
                       body: JSON.stringify(body || {})}).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(data.detail || data.title || response.statusText); }
        return data;
      });
    });
  }

  function fail(error) {
    errors.textContent = (error && error.message) || status.dataset.failed;
    status.textContent = "";
    submit.disabled = false;
  }

  post(form.dataset.setupUrl).then(function (setup) {
    var stripe = window.Stripe(setup.publishable_key);
    var card = stripe.elements().create("card");
    card.mount("#card-element");
    submit.disabled = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      submit.disabled = true;
      errors.textContent = "";
      status.textContent = status.dataset.working;
      stripe.confirmCardSetup(setup.client_secret, {payment_method: {card: card}})
        .then(function (result) {
          if (result.error) { throw result.error; }
          var method = result.setupIntent.payment_method;
          return post(form.dataset.saveUrl, {payment_method: method}).then(function () {
            return post(form.dataset.payUrl, {method: "card", payment_method: method});
          });
        })
        .then(function (paid) {
          if (paid.client_secret) {  // 3-D Secure: the bank asks the buyer to confirm
            return stripe.confirmCardPayment(paid.client_secret).then(function (result) {
              if (result.error) { throw result.error; }
            });
          }
        })
        .then(function () { window.location.assign(form.dataset.doneUrl); })
        .catch(fail);
    });
  }).catch(fail);
}());
