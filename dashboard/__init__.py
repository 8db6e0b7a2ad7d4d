"""The landscape dashboard (Streamlit): `streamlit run dashboard/app.py`."""
