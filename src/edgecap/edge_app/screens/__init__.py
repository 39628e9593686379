"""The app's screens, one module and one kv file (edge_app/kv/) each, named after the ScreenManager name:

    main      open the frontal and lateral views, generate              screens/main.py      kv/main.kv
    report    image + attention map, report, warnings, findings, time   screens/report.py    kv/report.kv
    history   the saved reports                                         screens/history.py   kv/history.kv
    settings  bundle, beam size, threads                                screens/settings.py  kv/settings.kv
    chooser   Kivy's file chooser (desktop, Raspberry Pi)               screens/chooser.py   kv/chooser.kv

Each Screen holds the Kivy properties only it shows and fills its own widgets; what the screens share (the
bundle, the worker, the history store, the settings, busy, the window's orientation) stays on the app.
"""
