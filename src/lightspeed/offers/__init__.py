"""BOLT 12 offers, sans-IO: the codec, the reader's and writer's rules, Merkle signatures.

Strings are ``lno1...`` (offer), ``lnr1...`` (invoice request or refund) and
``lni1...`` (invoice): bech32 characters without checksum, ``+`` continuations
allowed. Each message is a frozen dataclass that encodes back to exactly the bytes
it was decoded from (unknown odd fields kept). Decoders raise :class:`DecodeError`
naming the field; writers raise :class:`UsageError` when asked to break a writer rule.
Time, keys and randomness are inputs: nothing here reads a clock or a CSPRNG.

Reading::

    offer = decode_offer("lno1...")                 # every context-free reader rule
    check_offer_usable(offer, now=now, accepted_chains={BITCOIN.chain_hash})
    anything = decode_bolt12(text)                  # Offer | InvoiceRequest | Invoice by prefix

The flows (the node calls these; the onion-message transport is not here):

1. The payee makes an offer::

       offer = build_offer(issuer_id=node_id, description="coffee", amount_msat=10_000)
       offer.encode()                               # "lno1..."

2. The payer requests an invoice, signing with a fresh transient key::

       invreq = request_invoice(offer, payer_key=os.urandom(32), metadata=os.urandom(16),
                                payer_note="thanks")  # signed with invreq_payer_id

3. The payee checks the request against its offer and answers with a signed invoice::

       invreq = invoice_request_from_tlv(onion_message_field)  # or decode_invoice_request(s)
       check_invoice_request_for_offer(invreq, offer, now=now, accepted_chains=chains)
       invoice = respond_to_invoice_request(invreq, node_key=node_secret, payment_hash=h,
                                            created_at=now, paths=[path], blindedpay=[payinfo])

4. The payer checks the invoice against its request before paying::

       invoice = invoice_from_tlv(onion_message_field)
       check_invoice_for_request(invoice, invreq, now=now, accepted_chains=chains)
       invoice.usable_paths                          # (blinded path, payinfo) pairs to pay through

A refund is an invoice request without offer (:func:`build_refund`, unsigned); the
payee of the refund answers it with :func:`respond_to_invoice_request` too.
:class:`InvoiceError` is the ``invoice_error`` reply. :func:`merkle_root` is the
spec's TLV Merkle root; :func:`sign_merkle_root` / :func:`verify_merkle_root` the
BIP-340 signatures tagged "lightning" || message name || field name.
"""

from lightspeed.offers.decode import Bolt12, decode_bolt12
from lightspeed.offers.invoice import (
    DEFAULT_RELATIVE_EXPIRY,
    Invoice,
    check_invoice_for_request,
    decode_invoice,
    invoice_from_tlv,
    respond_to_invoice_request,
)
from lightspeed.offers.invoice_error import InvoiceError
from lightspeed.offers.invoice_request import (
    InvoiceRequest,
    build_refund,
    check_invoice_request_for_offer,
    decode_invoice_request,
    expected_amount_msat,
    invoice_request_from_tlv,
    request_invoice,
)
from lightspeed.offers.jsonfmt import bolt12_to_json
from lightspeed.offers.merkle import merkle_root, tagged_hash
from lightspeed.offers.offer import (
    Offer,
    build_offer,
    check_offer_usable,
    decode_offer,
    offer_from_tlv,
)
from lightspeed.offers.sign import sign_merkle_root, signature_tag, verify_merkle_root
from lightspeed.offers.strings import decode_string, encode_string, split_string
from lightspeed.offers.tlv_fields import Bip353Name, BlindedPayInfo, FallbackAddress

__all__ = [
    "DEFAULT_RELATIVE_EXPIRY",
    "Bip353Name",
    "BlindedPayInfo",
    "Bolt12",
    "FallbackAddress",
    "Invoice",
    "InvoiceError",
    "InvoiceRequest",
    "Offer",
    "bolt12_to_json",
    "build_offer",
    "build_refund",
    "check_invoice_for_request",
    "check_invoice_request_for_offer",
    "check_offer_usable",
    "decode_bolt12",
    "decode_invoice",
    "decode_invoice_request",
    "decode_offer",
    "decode_string",
    "encode_string",
    "expected_amount_msat",
    "invoice_from_tlv",
    "invoice_request_from_tlv",
    "merkle_root",
    "offer_from_tlv",
    "request_invoice",
    "respond_to_invoice_request",
    "sign_merkle_root",
    "signature_tag",
    "split_string",
    "tagged_hash",
    "verify_merkle_root",
]
