"""The dashboard's pages: (file name in app_pages/ = URL path, title, icon), in menu order."""

PAGES = [
    ("runs", "Runs", ":material/table_rows:"),
    ("training", "Training", ":material/show_chart:"),
    ("initializers", "Initializers", ":material/casino:"),
    ("optimizers", "Optimizers", ":material/speed:"),
    ("architectures", "Architectures", ":material/account_tree:"),
    ("curvature", "Curvature", ":material/ssid_chart:"),
    ("surfaces", "Surfaces", ":material/landscape:"),
    ("attention", "Attention", ":material/grid_on:"),
    ("report", "Study report", ":material/summarize:"),
    ("lab", "Lab", ":material/science:"),
]
