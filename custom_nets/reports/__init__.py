"""Reports: pictures and tables of cases and doses (matplotlib is imported only when a picture is drawn)."""
