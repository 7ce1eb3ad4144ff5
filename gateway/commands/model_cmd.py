"""`frugalsense model keygen|sign|push`: make the fleet's signing key, sign an exported model, send it to gateways."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gateway.commands.mqtt_options import add_mqtt_options, mqtt_settings


def register(subparsers) -> None:
    """Add `frugalsense model keygen|sign|push` and their options."""
    p = subparsers.add_parser(
        "model",
        help="sign exported models and push them to gateways over MQTT",
        description="Signed model updates (docs/model-updates.md): a gateway runs a model "
        "only if its manifest is signed by the fleet's key and every file "
        "matches the manifest.",
    )
    sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    keygen = sub.add_parser(
        "keygen",
        help="make the fleet's Ed25519 model-signing key pair",
        description="Write DIR/model-signing.key (private, mode 0600: keep it off gateways) and "
        "DIR/model-signing.pub (goes on every gateway: model_updates.public_key_file).",
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="DIR")
    keygen.add_argument(
        "--force", action="store_true", help="replace an existing key (gateways must get the new public key)"
    )
    keygen.set_defaults(func=run_keygen)

    sign = sub.add_parser(
        "sign",
        help="check an exported model folder and sign its manifest",
        description="Check every file of DIR against DIR/manifest.json (sha256), then sign the "
        "manifest and write DIR/manifest.sig.",
    )
    sign.add_argument("model_dir", type=Path, metavar="DIR")
    sign.add_argument("--key", type=Path, required=True, metavar="KEY", help="private key file (mode 0600)")
    sign.set_defaults(func=run_sign)

    push = sub.add_parser(
        "push",
        help="publish a signed model to gateways (retained, QoS 1)",
        description="Send DIR as one MQTT message to <prefix>/<site>/<gateway>/model-update/<model>, "
        "retained: a gateway that is offline gets it when it reconnects.",
    )
    push.add_argument("model_dir", type=Path, metavar="DIR")
    push.add_argument(
        "--to",
        action="append",
        required=True,
        metavar="SITE/GATEWAY",
        dest="targets",
        help="a gateway to update (repeat for more)",
    )
    push.add_argument(
        "--public-key",
        type=Path,
        default=None,
        metavar="PUB",
        help="check the signature with this public key before sending",
    )
    push.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for each gateway's report and print it",
    )
    push.add_argument(
        "--clear", action="store_true", help="remove the retained update of this model instead of sending it"
    )
    push.add_argument("--prefix", default="frugalsense")
    add_mqtt_options(push, client_id=f"frugalsense-model-push-{os.getpid()}")
    push.set_defaults(func=run_push)


def run_keygen(args: argparse.Namespace) -> int:
    """Make the fleet's signing key pair (private key mode 0600) and say where the public key goes."""
    from gateway.cli import UserError
    from gateway.model_updates.envelope import key_id, load_public_key
    from gateway.model_updates.signing import SigningError, generate_signing_key

    try:
        private, public = generate_signing_key(args.out, force=args.force)
    except (SigningError, OSError) as exc:
        raise UserError(str(exc)) from None
    print(f"private key {private} (mode 0600: keep it on the signing workstation or in CI secrets)")
    print(
        f"public key  {public} (key id {key_id(load_public_key(public))}): copy it to every gateway and set "
        "model_updates.public_key_file"
    )
    return 0


def run_sign(args: argparse.Namespace) -> int:
    """Sign an exported model's manifest with the fleet's private key."""
    from edge.runtime.manifest import ModelManifest
    from gateway.cli import UserError
    from gateway.model_updates.signing import SigningError, sign_model

    try:
        signature = sign_model(args.model_dir, args.key)
    except (SigningError, OSError) as exc:
        raise UserError(str(exc)) from None
    m = ModelManifest.read(args.model_dir)
    print(
        f"signed model {m.name} v{m.version} ({len(m.files)} files) with key {signature['key_id']}: "
        f"{args.model_dir / 'manifest.sig'}"
    )
    return 0


def run_push(args: argparse.Namespace) -> int:
    """Send a signed model (or clear it) to gateways, retained; exit code 1 if a gateway refused it."""
    from edge.contracts import ContractError, check_id
    from edge.runtime.manifest import ManifestError, ModelManifest
    from gateway.cli import UserError
    from gateway.model_updates.envelope import ModelUpdateConfigError, load_public_key
    from gateway.model_updates.listener import status_topic, update_topic
    from gateway.model_updates.signing import SigningError, build_update, push_update
    from gateway.protocol import topics as T

    gateways = []
    for target in args.targets:
        site, _, gateway = target.partition("/")
        try:
            gateways.append(T.Topics(args.prefix, check_id("site", site), check_id("gateway", gateway)))
        except ContractError as exc:
            raise UserError(f"--to {target}: must be SITE/GATEWAY ({exc})") from None
    try:
        if args.clear:
            manifest, payload = ModelManifest.read(args.model_dir), b""
        else:
            key = load_public_key(args.public_key) if args.public_key else None
            manifest, payload = build_update(args.model_dir, key)
    except (SigningError, ManifestError, ModelUpdateConfigError) as exc:
        raise UserError(str(exc)) from None
    targets = {update_topic(t, manifest.name): status_topic(t) for t in gateways}
    try:
        reports = push_update(
            mqtt_settings(args),
            targets,
            payload,
            model=manifest.name,
            version=manifest.version,
            wait_s=0.0 if args.clear else args.wait,
        )
    except ConnectionError as exc:
        raise UserError(str(exc)) from None
    what = "cleared" if args.clear else f"sent ({len(payload)} bytes, retained)"
    failed = 0
    for topic, report in reports.items():
        line = f"{topic}: model {manifest.name} v{manifest.version} {what}"
        if report is not None:
            line += f"; gateway: {report['outcome']}"
            if report.get("reason"):
                line += f" ({report['reason']}: {report.get('detail', '')})"
                failed += 1
            elif report.get("detail"):  # applied: where it runs, which detectors scored with it
                line += f" ({report['detail']})"
        elif args.wait > 0 and not args.clear:
            line += "; no answer yet (offline? it gets the update when it reconnects)"
        print(line)
    return 1 if failed else 0
