"""vs-hdrvid: HDR video from alternating-exposure footage, as VapourSynth nodes."""
