"""Write src/trialdesk/protocol/flagship_v2.yaml: flagship.yaml with amendment 1 applied."""

from __future__ import annotations

from trialdesk.protocol.flagship_amendment import amend, flagship_v2_path
from trialdesk.protocol.loader import flagship_path, load_protocol


def main() -> None:
    target = flagship_v2_path()
    target.write_text(amend(flagship_path().read_text(encoding="utf-8")), encoding="utf-8")
    load_protocol(target)  # refuses to leave an invalid protocol behind
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
