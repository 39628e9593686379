"""Android entry point: python-for-android runs main.py at the root of buildozer's source.dir (src/).
Not part of the installed package; desktops and the Raspberry Pi start the app with `edgecap app`."""

from edgecap.edge_app.boot import configure_kivy

configure_kivy()

from edgecap.edge_app.app import EdgecapApp  # noqa: E402 (Kivy must be configured first)

EdgecapApp().run()
