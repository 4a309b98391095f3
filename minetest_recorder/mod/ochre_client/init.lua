-- Client-side half of the pose log: the server's copy of the pose arrives in its own steps, which a busy
-- machine stretches to 100 ms or more, while this runs once per frame the client draws, with the camera that
-- frame shows. One client log line per frame:
--   OCHRE_FRAME us_time x y z look_horizontal look_vertical
-- us_time is minetest.get_us_time() (CLOCK_MONOTONIC_RAW, as the server mod's log); angles in radians.
minetest.register_globalstep(function()
	local player = minetest.localplayer
	local camera = minetest.camera
	if player == nil or camera == nil then
		return
	end
	local p = player:get_pos()
	minetest.log("action", string.format("OCHRE_FRAME %d %.4f %.4f %.4f %.5f %.5f", minetest.get_us_time(),
		p.x, p.y, p.z, camera:get_look_horizontal(), camera:get_look_vertical()))
end)
