"""Evidence studies driven through the plugin's configs and tools (not imported by
``mmdiff_2ndm`` itself: nothing here is registered)."""
