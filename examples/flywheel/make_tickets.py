"""Generate the flywheel demo's support tickets: examples/flywheel/tickets.jsonl.

    python examples/flywheel/make_tickets.py [--check]

Each ticket is one or two sentences a customer might write, with the queue a support team would route it
to (the queues of adapters/ticket-triage: billing, shipping, account, technical, returns). They are made
from hand-written templates, one situation each, filled from small vocabularies (products, amounts,
couriers, devices...) and given an optional greeting, a closing sentence or a casual style. Everything is
drawn from one seeded generator, so the file is the same on every run; `--check` regenerates it in memory
and fails if the committed file differs.

Templates carry a kind: "plain" (the queue's own words are in it), "implicit" (no telling keyword: the
situation alone says where it goes) or "mixed" (two queues' words; labelled by what the customer needs
done, see README.md). The split is by template: about 30% of each queue's templates, all their tickets,
are held out, so no held-out ticket shares its wording with a training ticket (`near_duplicates` checks
that no held-out ticket is close to any training one once greetings and closings are stripped).

Output, one JSON object a line: {"id", "queue", "split" ("train" or "heldout"), "kind", "text"}.
Standard library only.
"""

from __future__ import annotations

import argparse
import difflib
import json
import random
import re
import sys
from collections.abc import Collection
from pathlib import Path

SEED = 20261125
HELDOUT_FRACTION = 0.3
KINDS = ("plain", "implicit", "mixed", "hard")
# Each group of kinds is drawn from its own seeded stream (SEED, SEED + 1...) and appended: the hard kind
# came later, and drawing it apart left the tickets of the first three kinds, ids included, as they were.
STREAMS = (("plain", "implicit", "mixed"), ("hard",))
ROUTING_SEED = 20270311
HARD_SHARE = 0.2
OUT = Path(__file__).resolve().with_name("tickets.jsonl")

# Each template: (kind, text). Slots in braces are filled from VOCAB; a slot name ending in _b is a second,
# different value of the same vocabulary ({amount} and {amount_b}).
TEMPLATES: dict[str, list[tuple[str, str]]] = {
    "billing": [
        ("plain", "I was charged twice for order {order}."),
        ("plain", "My card was billed {amount_b} but the order total was only {amount}."),
        ("plain", "Can you send me an invoice for my {month} purchase? I need it for my expense report."),
        ("plain", "Why is there a {amount} charge from you on my bank statement? I don't recognise it."),
        ("plain", "I cancelled my {plan} subscription in {month} but you still took a payment this month."),
        ("plain", "How do I update the credit card you use for my monthly payments?"),
        ("plain", "My payment keeps getting declined even though the card works everywhere else."),
        ("plain", "The VAT on my invoice is wrong, our company is registered in {country}."),
        ("plain", "I'd like to switch from monthly to annual billing to get the discount."),
        ("plain", "The promo code {code} was accepted but the discount isn't on my receipt."),
        ("plain", "Could the invoices show our company name, {company}, instead of my personal name?"),
        ("plain", "Do you accept PayPal for payment or only credit cards?"),
        ("plain", "You charged me full price for the {item} even though it was on sale."),
        ("plain", "There's a pending charge of {amount} that still hasn't dropped off after {days} days."),
        ("plain", "We were billed for {n} seats but our team only has {m} people."),
        ("plain", "Could you explain the extra fee on my last bill?"),
        ("plain", "My bank says the payment went through, but your site still shows the invoice as unpaid."),
        ("plain", "Please turn off automatic renewal, I don't want to be charged again in {month}."),
        ("plain", "Is it possible to pay the outstanding balance in two instalments?"),
        ("plain", "The price of my {plan} plan went up from {amount} to {amount_b} without any notice."),
        ("plain", "Where can I download all my receipts from last year?"),
        ("plain", "I paid with a gift card but the full amount was still taken from my credit card."),
        ("plain", "The free trial was supposed to cost nothing, yet {amount} left my account today."),
        ("plain", "Our finance team needs a purchase order number on every invoice, how do I add it?"),
        ("plain", "I see three identical payments of {amount} to your store on {weekday}."),
        ("plain", "Will I be charged extra if I downgrade to the {plan} plan in the middle of the cycle?"),
        ("plain", "The amount on the invoice doesn't match the quote you sent us in {month}."),
        ("plain", "Why do I keep getting payment reminders when I already paid?"),
        ("plain", "I'd like a refund for the annual {plan} plan, I only used it for {days} days."),
        ("plain", "Can I get one invoice covering all {n} orders I placed this month?"),
        ("plain", "My student discount wasn't applied at the last renewal."),
        ("plain", "Checkout added {amount} of tax, is that right for {country}?"),
        ("implicit", "Money came out of my account twice for the same thing."),
        ("implicit", "Somebody in our finance department needs proof of what we paid you in {month}."),
        ("implicit", "How much will I be paying once the introductory price runs out?"),
        ("implicit", "Your accounts payable contact asked for our tax ID, where do I send it?"),
        ("implicit", "I see a transaction from you for something I never ordered."),
        ("implicit", "The total I paid is higher than what the product page said."),
        ("mixed", "You overcharged me for delivery on order {order}, please refund the difference to my card."),
        ("mixed", "The app froze during checkout and now there are two charges of {amount}, please refund one."),
        ("mixed", "I can sign in fine, but our invoices stopped arriving, can you resend the {month} invoice?"),
        ("hard", "This isn't about a return, I'm keeping the {item}. But I was charged {amount_b} when the price tag "
                 "said {amount}."),
        ("hard", "I ordered a {item} on {weekday}, the courier was late, the box was dented and the app crashed "
                 "twice while I was tracking it, but all of that is sorted now. What I need is for the second "
                 "payment of {amount} to go back on my card."),
        ("hard", "My accountant says the document you sent for {month} doesn't add up to what left our bank."),
        ("hard", "Everyone on our team can sign in and nobody is locked out, yet this month we paid for {n} seats "
                 "after removing {m} people."),
        ("hard", "The app said the upgrade to {plan} failed with an error, but the money was taken anyway and I want "
                 "it back."),
        ("hard", "Shipping was free on order {order}, so why is my statement {amount} higher than the order "
                 "confirmation?"),
        ("hard", "Not a technical question: the {plan} plan page says {amount} a month, but {amount_b} is what you "
                 "took this time."),
        ("hard", "Before I sign in to my old account again, tell me what the {plan} plan costs for a year if I go "
                 "back to it."),
        ("hard", "The {item} arrived in perfect shape and I'm keeping it, I just need a document for my tax return "
                 "showing what I paid in {month}."),
        ("hard", "I was told the replacement {gadget} would be free, and it arrived fine, but you took {amount} for "
                 "it."),
        ("hard", "My password works and the site is fine, but the {plan} renewal on {weekday} went through at full "
                 "price despite my loyalty discount."),
    ],
    "shipping": [
        ("plain", "My order {order} still hasn't been delivered and it's been {days} days."),
        ("plain", "The tracking number you sent doesn't work on the {carrier} website."),
        ("plain", "Tracking says delivered but there's no parcel at my door."),
        ("plain", "Can I change the delivery address for order {order}? I've moved to {city}."),
        ("plain", "My package has been stuck in customs in {country} since {weekday}."),
        ("plain", "The {carrier} courier left a note saying nobody was home, but I was in all day."),
        ("plain", "How long does standard shipping to {country} usually take?"),
        ("plain", "Do you ship to {country}, and how much does delivery cost?"),
        ("plain", "The tracking page hasn't updated since {weekday}, is my package lost?"),
        ("plain", "Can I collect my order from a {carrier} pickup point instead of home delivery?"),
        ("plain", "Only one of the two boxes in my shipment arrived."),
        ("plain", "Could the courier leave the parcel with my neighbour at number {house}?"),
        ("plain", "When will the {item} I ordered on {weekday} be dispatched?"),
        ("plain", "The estimated delivery date keeps moving, first it was {weekday} and now it's next week."),
        ("plain", "Is there a way to get my delivery on a Saturday?"),
        ("plain", "It has said out for delivery since yesterday morning and nothing came."),
        ("plain", "I'm away until {weekday}, can you hold my parcel until then?"),
        ("plain", "Which courier do you use for deliveries to {city}?"),
        ("plain", "My order shows as shipped but there's no tracking link in the email."),
        ("plain", "The delivery van came while I was out and took my parcel back, how do I rearrange delivery?"),
        ("plain", "Is shipping free on orders over {amount}?"),
        ("plain", "The address on my order is missing the flat number, please add flat {house} before it ships."),
        ("plain", "The parcel was delivered to the wrong house on my street."),
        ("plain", "Can I upgrade my order {order} to next-day delivery?"),
        ("plain", "The {carrier} app says my parcel is in a locker but I never got the pickup code."),
        ("plain", "Will my order arrive before {holiday}?"),
        ("plain", "Your site promised delivery in two days and it has been {days} days."),
        ("plain", "The courier marked my parcel as refused, but I never refused anything."),
        ("plain", "Do you deliver to PO boxes?"),
        ("plain", "The package is heading to my old address in {city}, can it be redirected?"),
        ("plain", "Can you split my order so the {item} ships now and the rest follows later?"),
        ("implicit", "Where is my stuff? I ordered it almost {weeks} weeks ago."),
        ("implicit", "The {item} has been sitting at the depot in {city} for days and nobody can tell me why."),
        ("implicit", "Nothing has turned up yet for order {order}, could you check on it?"),
        ("implicit", "Two weeks on and it still says label created, has my order even left your warehouse?"),
        ("implicit", "I've stayed home all week waiting for the {item} and still nothing."),
        ("implicit", "I need the {item} by {weekday} for a birthday, will it get here in time?"),
        ("mixed", "I paid extra for express delivery but the {item} still hasn't come after a week, where is it?"),
        ("mixed", "The courier asks for an import duty before delivering my package, is that normal for {country}?"),
        ("mixed", "The box arrived crushed but the {item} inside seems fine, please tell your courier."),
        ("hard", "I don't want to return the {item}, I want it to finally get here: order {order} hasn't moved since "
                 "{weekday}."),
        ("hard", "It's not a billing question, the payment went through fine. The {item} just never left your "
                 "warehouse."),
        ("hard", "I updated the app, reset my password and paid the invoice, so all that is sorted. The one thing "
                 "left is that my order went to my old flat in {city} and I need it brought to the new one."),
        ("hard", "You charged me for express delivery and I don't mind the price, I just need to know which day the "
                 "{carrier} van is coming."),
        ("hard", "The neighbour at number {house} has had a box with my name on it since {weekday}, is that where "
                 "you were supposed to leave it?"),
        ("hard", "The app's map shows the van circling around {city} since this morning, is my order actually coming "
                 "today?"),
        ("hard", "My account page says order {order} is complete, but the {item} still isn't at my door."),
        ("hard", "No error, no crash, the website works fine; before I place an order I need to know if you deliver "
                 "to {country}."),
        ("hard", "I'm not returning anything: the label on order {order} has the wrong street name, can it be fixed "
                 "before the courier picks it up?"),
        ("hard", "Loved my last order, the invoice was clear and the {item} is great. This time it has to be here "
                 "before {holiday}, can you send it faster?"),
        ("hard", "I work nights, so could the {item} come after six in the evening instead of the morning?"),
    ],
    "account": [
        ("plain", "I forgot my password and the reset email never arrives."),
        ("plain", "I can't sign in, it says my email isn't registered but I've used it for years."),
        ("plain", "How do I change the email address on my account to my work one?"),
        ("plain", "My account got locked after too many login attempts."),
        ("plain", "Please delete my account and all the data you have on me."),
        ("plain", "The two-factor code goes to my old phone number, how do I change it?"),
        ("plain", "How can I merge my two accounts into one?"),
        ("plain", "Please update the last name on my profile, I recently got married."),
        ("plain", "Someone logged into my account from {country}, and it wasn't me."),
        ("plain", "I lost the phone with my authenticator app, how do I get back into my account?"),
        ("plain", "The magic sign-in link says it has expired every time I click it."),
        ("plain", "How do I unsubscribe from the marketing emails in my profile settings?"),
        ("plain", "I signed up with Google and now I'd like to log in with a normal password instead."),
        ("plain", "My username still shows my old company name, can it be changed?"),
        ("plain", "I'd like a copy of all the personal data my account holds."),
        ("plain", "Every time I log in it asks me to verify my email again."),
        ("plain", "I never created an account with you but I keep getting welcome emails."),
        ("plain", "How do I reactivate an account I closed last year?"),
        ("plain", "I'm the admin of our team, how do I remove a former employee's login?"),
        ("plain", "Where do I fix my date of birth on my profile? It was entered wrong."),
        ("plain", "How do I sign out of my account on all devices at once?"),
        ("plain", "Please close my account, I'm moving to another service."),
        ("plain", "The password reset page says my link is invalid."),
        ("plain", "My account says it's suspended, what did I do wrong?"),
        ("plain", "I accidentally created a second account with a typo in the email address."),
        ("plain", "I'd like to switch my account's language to {language}."),
        ("plain", "Can I set up a passkey instead of a password to sign in?"),
        ("plain", "How do I make my profile private so other users can't see my name?"),
        ("plain", "Can you unlink my Facebook login from my profile?"),
        ("plain", "I want to transfer ownership of our workspace to a colleague."),
        ("implicit", "I can't get in anymore since I switched to a new phone."),
        ("implicit", "It keeps telling me my details are wrong even though I'm typing them correctly."),
        ("implicit", "I don't remember what I used to register and nothing I try lets me through."),
        ("implicit", "I got a text with a code I never asked for, is someone trying to get in as me?"),
        ("implicit", "Can my husband and I share one login, or does each of us need our own?"),
        ("implicit", "Which of my email addresses did I register with? I have three."),
        ("implicit", "I share a computer at work, how do I stop the site remembering me?"),
        ("mixed", "I changed my password yesterday but the old one still works in the app, is my account safe?"),
        ("mixed", "I'm locked out of my account so I can't get my {month} invoice, please help me sign in."),
        ("mixed", "The app keeps logging me out and asking for my password, is something wrong with my account?"),
        ("hard", "I don't need a refund or a new card, I need to get back in: the reset link goes to the email "
                 "address I had at {company}."),
        ("hard", "The app on my {device} doesn't crash and shows no error, it just refuses the password I set an "
                 "hour ago."),
        ("hard", "Order {order} arrived, the invoice is fine and the {item} works. What I need now is to change the "
                 "email I sign in with, my old one is being shut down."),
        ("hard", "Not a billing thing: my ex still has access to our shared {plan} login, how do I get them out?"),
        ("hard", "A colleague who left in {month} can still see our orders when she opens the site, how do I take "
                 "away her access?"),
        ("hard", "Back from a trip to {country} and I'm shut out: the site blocked me for suspicious activity while "
                 "I was away."),
        ("hard", "Your shipping updates for order {order} still go to my old email address, where do I change it?"),
        ("hard", "I'd like to keep my order history but stop my full name from showing on my review of the {item}."),
        ("hard", "My son bought games on my login on {weekday} without asking; I'm not after a refund, I just want "
                 "him to have his own so it can't happen again."),
        ("hard", "The {gadget} works and the delivery was fine, but I ordered it as a guest and now I'd like my "
                 "orders to show up under a proper account."),
        ("hard", "I got married in {month} and the name on everything you send me is still my old one."),
    ],
    "technical": [
        ("plain", "The app crashes as soon as I open the {area} screen."),
        ("plain", "I get an error 500 every time I try to save my settings."),
        ("plain", "The website is extremely slow on {browser} today."),
        ("plain", "Notifications stopped working on my {device} after the last update."),
        ("plain", "The {area} page is completely blank in {browser}."),
        ("plain", "Your app won't install on my {device}, it says the device is incompatible."),
        ("plain", "The search returns no results, even for products I can see on the homepage."),
        ("plain", "Images don't load in the app, I only see grey boxes."),
        ("plain", "The export to CSV button does nothing when I click it."),
        ("plain", "Sync between my phone and laptop stopped working on {weekday}."),
        ("plain", "The page freezes when I upload a photo bigger than {mb} MB."),
        ("plain", "In dark mode the buttons in the {area} menu are invisible."),
        ("plain", "I get 'something went wrong' whenever I open {area}."),
        ("plain", "The {integration} integration disconnects every night."),
        ("plain", "Your API returns a 429 error even though we're far below our limit."),
        ("plain", "The app drains my battery even when it's running in the background."),
        ("plain", "Videos in the help centre never play, I just get a spinning wheel."),
        ("plain", "After updating to version {version} the app won't open at all."),
        ("plain", "The dates in my reports are off by one day since the last release."),
        ("plain", "The text in the app overlaps so I can't read the {area} options."),
        ("plain", "Push notifications arrive hours late on my {device}."),
        ("plain", "The home screen widget still shows data from last week."),
        ("plain", "Your site says my browser isn't supported, but I'm on the latest {browser}."),
        ("plain", "Files I upload come out corrupted when I download them again."),
        ("plain", "The desktop app uses 100% CPU and my laptop fans never stop."),
        ("plain", "Error code {errcode} pops up every time I try to print a report."),
        ("plain", "On my {device} the keyboard covers the input field, so I can't see what I type."),
        ("plain", "Attachments fail to upload, the progress bar stops at {pct}%."),
        ("plain", "The app says there's no internet connection but everything else on my {device} works."),
        ("plain", "Since the update the {area} screen keeps loading forever."),
        ("plain", "The scroll jumps back to the top every time new items load."),
        ("implicit", "Whenever I tap the {area} tab, the whole thing just closes on me."),
        ("implicit", "Since yesterday the map on your site is completely empty."),
        ("implicit", "Nothing happens when I press save, I've tried five times."),
        ("implicit", "Is anything down on your side? The dashboard won't open for anyone in our office."),
        ("implicit", "My smart {gadget} won't pair with your app over Bluetooth."),
        ("implicit", "Half of the buttons show up in English and the other half in {language}."),
        ("mixed", "The checkout button is greyed out in {browser} so I can't pay, is the page broken?"),
        ("mixed", "The sign-in page shows a blank white screen on my {device}, it looks like a bug."),
        ("mixed", "The return form on your site throws an error when I press submit."),
        ("hard", "It's not about a refund, the refund request button on the {area} page just spins forever when I "
                 "click it."),
        ("hard", "My card is fine and I can log in, but the invoices page is just a blank screen in {browser}."),
        ("hard", "I ordered a {item} last month, it arrived quickly and I love it. I wanted to leave a review, but "
                 "each time I press submit the page reloads and my text is gone."),
        ("hard", "I don't need to know where my parcel is, the email says it's on its way; but your tracking page "
                 "freezes {browser} every time I open it."),
        ("hard", "Please don't reset my password again, that's not the problem: the sign-in button does nothing on "
                 "my {device} since version {version}."),
        ("hard", "In {browser}, the quantity I type in the basket changes back to one by itself a second later."),
        ("hard", "Whatever I put in my cart is gone when I go to the next page on my {device}; I'm not after a "
                 "discount, I just want the cart to keep my items."),
        ("hard", "The {integration} sync puts every order in twice, so it looks like we paid twice, but the bank "
                 "shows one payment."),
        ("hard", "Not a delivery problem, the {gadget} is here. The QR code on the box should open the setup guide "
                 "in your app, and it gives a page not found."),
        ("hard", "I'm not returning anything, I just want to tell you that your returns policy page shows garbled "
                 "characters in {browser}."),
        ("hard", "The delivery slots at checkout never load on my {device}, so I can't finish the order."),
    ],
    "returns": [
        ("plain", "I'd like to return the {garment}, it doesn't fit."),
        ("plain", "The {item} arrived broken, can I get a replacement?"),
        ("plain", "How do I exchange the {color} {garment} for a different colour?"),
        ("plain", "I sent the {item} back {days} days ago and haven't heard anything since."),
        ("plain", "Can I return something online that I bought in your {city} store?"),
        ("plain", "You sent me a size {size} instead of {size_b}, I'd like to exchange it."),
        ("plain", "The {gadget} stopped working after two weeks, can I get a replacement?"),
        ("plain", "What's your return window for sale items?"),
        ("plain", "I received the wrong item, I ordered a {item} and got a {item_b}, how do I return it?"),
        ("plain", "Can I exchange the {item} for store credit instead of a refund?"),
        ("plain", "The refund for the {item} I returned hasn't shown up yet."),
        ("plain", "Do I have to pay the postage when I return an item?"),
        ("plain", "The {gadget} is missing a part, can you send a replacement?"),
        ("plain", "I changed my mind about the {item}, it's still sealed, can I return it?"),
        ("plain", "The {item} was a gift, can my friend exchange it without a receipt?"),
        ("plain", "Where do I drop off a parcel I'm returning?"),
        ("plain", "I need a bigger size of the {garment}, do I have to return it first?"),
        ("plain", "Can I return just one item from a bundle?"),
        ("plain", "The replacement {gadget} you sent has the same fault as the first one."),
        ("plain", "How long does it take to process a return once you receive it?"),
        ("plain", "I threw away the original box, can I still return the {item}?"),
        ("plain", "Your returns portal says order {order} isn't eligible, but it's only {days} days old."),
        ("plain", "Is there a restocking fee if I return the {gadget}?"),
        ("plain", "Can you arrange a collection to return a {bulky} that's too big to post?"),
        ("plain", "I accidentally ordered the {item} twice, can I return one?"),
        ("plain", "Can I return a personalised {item}? The engraving is misspelled."),
        ("plain", "Do you offer exchanges on swimwear?"),
        ("plain", "The {item} was damaged in transit, I want a replacement."),
        ("plain", "I returned the wrong item by mistake, can you send it back to me?"),
        ("plain", "I bought the {item} for my mum but she already has one, can I return it?"),
        ("implicit", "The {item} I got is scratched all over and I'd rather not keep it."),
        ("implicit", "This {item} is not what I ordered, what now?"),
        ("implicit", "The {garment} is way too small even though I followed your size guide."),
        ("implicit", "The colour of the {garment} is nothing like the photos, I don't want it."),
        ("implicit", "The {garment} fell apart after one wash."),
        ("implicit", "The {gadget} leaks, I want my money back or a new one."),
        ("implicit", "Half of the glasses in the set arrived cracked, I'd like a new set."),
        ("mixed", "Can I exchange the {gadget} for the newer model? I'm happy to pay the difference."),
        ("mixed", "The courier collected my return on {weekday} but the status still says awaiting parcel."),
        ("mixed", "The return label in your email won't scan at the post office, can you send a new one?"),
        ("hard", "The charge is fine and I'm not disputing it; I just want to send the {garment} back because it "
                 "doesn't suit me."),
        ("hard", "Delivery was quick and the courier was friendly, but the {item} inside has a crack and I'd like a "
                 "new one."),
        ("hard", "I've been a customer for years, I've paid every invoice on time and never had trouble with an "
                 "order. But the {gadget} you sent on {weekday} smells of burning when I switch it on, and I want to "
                 "swap it for another."),
        ("hard", "No, this is not a problem with your website: the {gadget} itself won't turn on out of the box and "
                 "I'd like to exchange it."),
        ("hard", "The {gadget}'s screen shows error {errcode} the moment it powers on; I've tried resetting it, so "
                 "please take it back."),
        ("hard", "The {bulky} arrived on time, but it's not the one in the photo; can your courier take it away and "
                 "bring the right one?"),
        ("hard", "I'm not asking for my money back, I'd rather have the {item} in another colour, is that possible?"),
        ("hard", "The {garment} looks lovely but the zip broke the second time I wore it, I'd like a new one."),
        ("hard", "I dropped the {item} from order {order} at the post office today; please note it on my account so "
                 "that my money comes back."),
        ("hard", "It's not broken and it arrived on time, I just ordered the wrong size of {garment}, what do I do "
                 "now?"),
        ("hard", "The battery of the {gadget} dies within an hour even though the app says it's fully charged, so I "
                 "want it replaced."),
    ],
}

VOCAB: dict[str, list[str]] = {
    "order": [f"#{n}" for n in (40213, 40987, 41356, 41702, 42118, 42864, 43051, 43377, 43920, 44306, 44781,
                                45129, 45562, 46033, 46418, 46975, 47240, 47811, 48365, 48902, 49417, 49880)],
    "amount": ["$12.99", "$19.90", "$24.50", "$29.99", "$34.00", "$49.95", "$59.00", "$79.99", "$89.50",
               "€14.99", "€27.00", "€39.90", "€64.50", "€99.00", "£18.75", "£22.40", "£45.00", "£120.00"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September",
              "October", "November", "December"],
    "weekday": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "days": ["3", "4", "5", "6", "8", "9", "10", "12", "14", "17", "20"],
    "weeks": ["two", "three", "four"],
    "plan": ["Basic", "Plus", "Pro", "Family", "Team", "Premium"],
    "code": ["SPRING15", "WELCOME10", "SAVE20", "FREESHIP", "BLACKFRIDAY", "VIP25", "SUMMER5"],
    "company": ["Brightline Ltd", "Northwind Traders", "Kessler & Sons", "Bluefield GmbH", "Orchid Studio",
                "Harbor Analytics", "Maple Dental"],
    "country": ["Canada", "Germany", "Spain", "Ireland", "Australia", "Norway", "Switzerland", "Japan",
                "Mexico", "Poland", "the Netherlands", "Italy"],
    "city": ["Leeds", "Lyon", "Denver", "Rotterdam", "Porto", "Austin", "Glasgow", "Munich", "Toronto",
             "Dublin", "Valencia", "Seattle"],
    "carrier": ["DHL", "UPS", "FedEx", "DPD", "GLS", "Royal Mail", "Evri", "USPS", "PostNL"],
    "holiday": ["Christmas", "Easter", "Mother's Day", "the long weekend", "New Year"],
    "house": ["4", "7", "12", "15", "21", "28", "33", "40"],
    "n": ["12", "15", "20", "25", "30"],
    "m": ["6", "8", "9", "10"],
    "item": ["blender", "kettle", "desk lamp", "backpack", "coffee maker", "rain jacket", "yoga mat",
             "water bottle", "phone case", "toaster", "sweater", "wall clock", "duvet cover", "Bluetooth speaker",
             "smart watch", "wireless headset", "frying pan", "office chair", "hiking boots", "table lamp"],
    "gadget": ["blender", "kettle", "coffee maker", "toaster", "Bluetooth speaker", "smart watch",
               "wireless headset", "hair dryer", "electric toothbrush", "robot vacuum", "air fryer", "keyboard"],
    "garment": ["rain jacket", "sweater", "hoodie", "winter coat", "dress", "pair of jeans", "shirt",
                "pair of running shoes", "skirt", "pair of boots"],
    "bulky": ["sofa", "wardrobe", "treadmill", "mattress", "dining table", "bookcase"],
    "color": ["black", "navy", "grey", "green", "red", "white", "beige"],
    "size": ["S", "M", "L", "XL", "8", "10", "12", "38", "42"],
    "device": ["iPhone 13", "iPhone 15", "Pixel 7", "Galaxy S22", "iPad", "Android tablet", "MacBook",
               "Windows laptop", "Chromebook"],
    "browser": ["Chrome", "Firefox", "Safari", "Edge"],
    "area": ["settings", "checkout", "orders", "profile", "search", "favourites", "messages", "cart",
             "dashboard", "reports"],
    "integration": ["Slack", "Shopify", "Google Calendar", "Dropbox", "Zapier", "Outlook"],
    "version": ["4.2.1", "4.3.0", "5.0.2", "5.1", "3.9.7"],
    "errcode": ["E102", "E217", "0x80070005", "ERR_42", "E-503"],
    "pct": ["40", "75", "90", "99"],
    "mb": ["5", "8", "10", "20"],
    "language": ["Spanish", "German", "French", "Dutch", "Polish", "Italian"],
}

GREETINGS = ["Hi,", "Hello,", "Hi there,", "Hey,", "Good morning,", "Hello team,", "Dear support,"]
CLOSINGS = ["Thanks.", "Thank you!", "Can you help?", "Please advise.", "Any help appreciated.",
            "What can I do?", "This is really frustrating.", "Please get back to me soon.",
            "I'd appreciate a quick reply.", "Thanks in advance.", "Could someone look into this?", "Cheers.",
            "Order {order}.", "I've been a customer for years.", "Please sort this out.", "What are my options?"]

def fill(template: str, rng: random.Random) -> str:
    """The template with each slot filled; `name` and `name_b` get different values. Amounts in one
    ticket share a currency, and {amount} is the smaller of two."""
    slots = sorted(set(re.findall(r"\{(\w+)\}", template)))
    chosen: dict[str, str] = {}
    for slot in slots:
        base = slot.removesuffix("_b")
        options = [v for v in VOCAB[base] if v not in chosen.values()]
        if base == "amount" and "amount" in chosen:
            options = [v for v in options if v[0] == chosen["amount"][0]]
        chosen[slot] = rng.choice(options)
    if "amount_b" in chosen and float(chosen["amount"][1:]) > float(chosen["amount_b"][1:]):
        chosen["amount"], chosen["amount_b"] = chosen["amount_b"], chosen["amount"]
    return template.format(**chosen)


def dress(core: str, rng: random.Random) -> str:
    """The ticket as a customer writes it: a greeting now and then, a closing sentence after a one-sentence
    ticket now and then, and sometimes all lower case without the final full stop."""
    text = core
    if rng.random() < 0.25:
        greeting = rng.choice(GREETINGS)
        first = text if re.match(r"I\b", text) else text[0].lower() + text[1:]
        text = f"{greeting} {first}"
    sentences = len(re.findall(r"[.?!](?:\s|$)", core))
    if sentences <= 1 and rng.random() < 0.35:
        text = f"{text} {fill(rng.choice(CLOSINGS), rng)}"
    if rng.random() < 0.12:
        text = text.lower().rstrip(".")
    return text


def core_of(text: str) -> str:
    """A ticket without its greeting and closing, lower case: what `near_duplicates` compares."""
    text = text.lower()
    for greeting in GREETINGS:
        if text.startswith(greeting.lower()):
            text = text[len(greeting):].strip()
    text = text.rstrip(".")
    for closing in CLOSINGS:
        closing = closing.lower().rstrip(".")
        if "{order}" in closing:
            text = re.sub(r"\s*order #\d+$", "", text)
        elif text.endswith(closing) and len(text) > len(closing):
            text = text[: -len(closing)].strip().rstrip(".")
    return text


def heldout_templates(rng: random.Random, kinds: tuple[str, ...]) -> set[tuple[str, int]]:
    """(queue, template index) of the held-out templates of `kinds`: HELDOUT_FRACTION of each queue's
    templates of each kind, so both splits have tickets of every kind of every queue."""
    chosen: set[tuple[str, int]] = set()
    for queue, templates in TEMPLATES.items():
        for kind in kinds:
            indices = [i for i, (k, _) in enumerate(templates) if k == kind]
            rng.shuffle(indices)
            chosen.update((queue, i) for i in indices[: round(len(indices) * HELDOUT_FRACTION)])
    return chosen


def draw(rng: random.Random, kinds: tuple[str, ...]) -> list[dict[str, str]]:
    """The tickets of the templates of `kinds`, two or three of each, with their split, in random order."""
    heldout = heldout_templates(rng, kinds)
    rows: list[dict[str, str]] = []
    for queue, templates in TEMPLATES.items():
        for index, (kind, template) in enumerate(templates):
            if kind not in kinds:
                continue
            copies = 3 if rng.random() < 0.4 else 2
            seen: set[str] = set()
            for _ in range(copies * 4):  # a few more tries: a template without slots repeats itself
                if len(seen) == copies:
                    break
                text = dress(fill(template, rng), rng)
                if text in seen:
                    continue
                seen.add(text)
                rows.append({"queue": queue, "split": "heldout" if (queue, index) in heldout else "train",
                             "kind": kind, "text": text, "template": f"{queue}/{index}"})
    rng.shuffle(rows)  # traffic arrives mixed, not queue by queue
    return rows


def generate(seed: int = SEED, templates: bool = False) -> list[dict[str, str]]:
    """tickets.jsonl's rows: each group of STREAMS drawn from its own stream (`seed`, `seed + 1`...), appended.
    With `templates`, each row also names its template (`"template": "billing/41"`, as `routing`'s rows do);
    the file leaves it out."""
    rows: list[dict[str, str]] = []
    for offset, kinds in enumerate(STREAMS):
        rows += draw(random.Random(seed + offset), kinds)
    return [{"id": f"t{i:04d}", **{k: v for k, v in row.items() if templates or k != "template"}}
            for i, row in enumerate(rows)]


def routing(n: int, seed: int = ROUTING_SEED, hard_share: float = HARD_SHARE,
            templates: Collection[str] | None = None) -> list[dict[str, str]]:
    """`n` tickets for a routing dataset, from the same templates with another seed: `hard_share` of them
    of the hard kind, the rest spread evenly over the other templates (so in their proportions). None
    repeats another, or one of tickets.jsonl (case and final full stop aside). Rows: {"id" ("r0000"...),
    "queue", "kind", "template" ("billing/41": the queue and the template's index), "text"}; no split,
    `template` is there to split by. `templates` ("billing/41"...) draws from those templates only."""
    rng = random.Random(seed)
    seen = {_key(r["text"]) for r in generate()}
    pools: dict[bool, list[tuple[str, int, str, str]]] = {True: [], False: []}
    for queue, texts in TEMPLATES.items():
        for index, (kind, template) in enumerate(texts):
            if templates is None or f"{queue}/{index}" in templates:
                pools[kind == "hard"].append((queue, index, kind, template))
    hard = round(n * hard_share)
    rows: list[dict[str, str]] = []
    for pool, count in ((pools[True], hard), (pools[False], n - hard)):
        rng.shuffle(pool)
        spent: set[int] = set()  # templates that could make no new ticket: their turns go to the others
        made = turn = 0
        while made < count:
            if len(spent) == len(pool):
                raise ValueError(f"the templates cannot make {count} distinct tickets")
            slot, turn = turn % len(pool), turn + 1
            if slot in spent:
                continue
            queue, index, kind, template = pool[slot]
            for _ in range(50):  # a template without slots varies only in its greeting, closing and case
                text = dress(fill(template, rng), rng)
                if _key(text) not in seen:
                    break
            else:
                spent.add(slot)
                continue
            seen.add(_key(text))
            rows.append({"queue": queue, "kind": kind, "template": f"{queue}/{index}", "text": text})
            made += 1
    rng.shuffle(rows)
    return [{"id": f"r{i:04d}", **row} for i, row in enumerate(rows)]


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!?").lower()


def near_duplicates(rows: list[dict[str, str]], threshold: float = 0.8) -> list[tuple[str, str, float]]:
    """Held-out tickets whose core (greeting and closing stripped) is at least `threshold` similar
    (difflib's ratio) to a training ticket's core: (held-out id, training id, ratio)."""
    train = [(r["id"], core_of(r["text"])) for r in rows if r["split"] == "train"]
    found = []
    for row in rows:
        if row["split"] != "heldout":
            continue
        core = core_of(row["text"])
        matcher = difflib.SequenceMatcher(None, "", core, autojunk=False)
        best = ("", 0.0)
        for tid, other in train:
            matcher.set_seq1(other)
            if matcher.real_quick_ratio() >= threshold and matcher.quick_ratio() >= threshold:
                ratio = matcher.ratio()
                if ratio > best[1]:
                    best = (tid, ratio)
        if best[1] >= threshold:
            found.append((row["id"], best[0], round(best[1], 3)))
    return found


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="fail if tickets.jsonl differs from a fresh generation")
    p.add_argument("--routing", type=int, metavar="N",
                   help="write N tickets for a routing dataset to --out instead (another seed, no split)")
    p.add_argument("--out", type=Path, help="where --routing writes")
    args = p.parse_args()
    if args.routing:
        if args.out is None or args.check:
            p.error("--routing needs --out, and goes without --check")
        rows = routing(args.routing)
        args.out.write_text(render(rows), encoding="utf-8")
        kinds = {kind: sum(r["kind"] == kind for r in rows) for kind in KINDS}
        print(f"{len(rows)} routing tickets -> {args.out} ({kinds})")
        return
    rows = generate()
    close = near_duplicates(rows)
    if close:
        sys.exit(f"held-out tickets too close to training ones: {close}")
    text = render(rows)
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT} differs from what make_tickets.py generates; run it again and commit the result")
        print(f"{OUT.name} is up to date ({len(rows)} tickets)")
        return
    OUT.write_text(text, encoding="utf-8")
    counts = {split: sum(r["split"] == split for r in rows) for split in ("train", "heldout")}
    print(f"{len(rows)} tickets -> {OUT} ({counts['train']} train, {counts['heldout']} held out)")


if __name__ == "__main__":
    main()
